// examples/ applied with the real kubectl against the operator as a child
// process; the Secrets have the documented layout and decrypt through the
// operator's KMS API with the official pop-core client.
import * as path from 'node:path';
import {
  REPO,
  STANDARD_SECRET_KEYS,
  client,
  dataKeysPath,
  decode,
  decryptSecret,
  getOrUndefined,
  kubectlOk,
  leakScanTests,
  removeExampleObjects,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  type DataKeyObject,
  type SecretObject,
} from '../helpers/operator-suite';
import type { OperatorProcess } from '../helpers/operator-process';
import { eventually } from '../helpers/wait';
import type { KubeObject } from '../../src/runtime/kube-client';

const suite = useOperatorSuite('examples');
suite.extraMasterKeys.push('payments');
suite.extraNamespaces.push('shop');
let op: OperatorProcess;
const secrets: Record<string, SecretObject> = {};

beforeAll(async () => {
  await removeExampleObjects();
  op = await suite.start();
});

test('kubectl apply -f examples/ and kubectl wait: MasterKey and DataKeys become Ready', async () => {
  await kubectlOk(['apply', '-f', path.join(REPO, 'examples')]);
  await kubectlOk(['wait', '--for=condition=Ready', 'masterkey/payments', '--timeout=60s']);
  await kubectlOk([
    'wait',
    '--for=condition=Ready',
    'datakey',
    '--all',
    '-n',
    'shop',
    '--timeout=60s',
  ]);
  const mk = await client.get<KubeObject & { status: { keyId: string } }>(
    `${masterKeysPath}/payments`,
  );
  expect(mk.status.keyId).toBeTruthy();
  const dks = (await client.list<DataKeyObject>(dataKeysPath('shop'))).items;
  expect(dks.map((d) => d.metadata.name).sort()).toEqual(['invoices', 'orders']);
  for (const dk of dks) {
    expect(dk.status?.keyId).toBe(mk.status.keyId);
    expect(dk.status?.flow).toBe('Standard');
  }
});

test.each([
  ['orders', 'orders', 32, { app: 'orders' }],
  ['invoices', 'invoices-datakey', 16, {}],
])(
  'DataKey %s: Secret %s has exactly the documented layout and decrypts through the KMS API',
  async (dkName, secretName, bytes, userContext) => {
    const dk = await client.get<DataKeyObject>(`${dataKeysPath('shop')}/${dkName}`);
    const secret = await client.get<SecretObject>(`${secretsPath('shop')}/${secretName}`);
    secrets[dkName] = secret;
    expect(secret.type).toBe('kms.datakey.io/datakey');
    expect(secret.metadata.labels?.['kms.datakey.io/datakey']).toBe(dkName);
    expect(secret.metadata.ownerReferences).toEqual([
      expect.objectContaining({
        apiVersion: 'kms.datakey.io/v1alpha1',
        kind: 'DataKey',
        name: dkName,
        uid: dk.metadata.uid,
        controller: true,
      }),
    ]);
    expect(Object.keys(secret.data ?? {}).sort()).toEqual(STANDARD_SECRET_KEYS);
    const data = secret.data as Record<string, string>;
    expect(decode(data.flow)).toBe('Standard');
    expect(decode(data.keyId)).toBe(dk.status?.keyId);
    expect(decode(data.keyVersionId)).toBe(dk.status?.keyVersionId);
    expect(dk.status?.ciphertextBlob).toBe(decode(data.ciphertextBlob));
    expect(secret.metadata.labels?.['kms.datakey.io/layout']).toBe('2');
    // The context is canonical JSON: the user's context plus the identity binding.
    const context = JSON.parse(decode(data.encryptionContext)) as Record<string, string>;
    expect(context).toEqual({
      ...userContext,
      'kms.datakey.io/namespace': 'shop',
      'kms.datakey.io/name': dkName,
    });

    const plaintext = await decryptSecret(op, secret);
    expect(plaintext).toHaveLength(bytes);
    expect(plaintext.equals(Buffer.alloc(bytes))).toBe(false);
    // Never the plaintext in the Secret.
    for (const value of Object.values(data)) {
      expect(Buffer.from(value, 'base64').includes(plaintext)).toBe(false);
    }
  },
);

test('the ciphertext is bound to the DataKey identity: another context does not open it', async () => {
  const secret = secrets.orders;
  expect(secret).toBeDefined();
  const context = JSON.parse(decode(secret.data?.encryptionContext));
  const copied: SecretObject = {
    ...secret,
    data: {
      ...secret.data,
      encryptionContext: Buffer.from(
        JSON.stringify({ ...context, 'kms.datakey.io/namespace': 'elsewhere' }),
      ).toString('base64'),
    },
  };
  await expect(decryptSecret(op, copied)).rejects.toMatchObject({
    code: expect.stringMatching(/InvalidParameter|Rejected|Forbidden/),
  });
});

leakScanTests(suite, () => secrets.orders);

test('clean up the examples: DataKeys, then the MasterKey (its finalizer released)', async () => {
  await kubectlOk(['delete', 'datakeys', '--all', '-n', 'shop', '--wait=true']);
  await kubectlOk(['delete', '-f', path.join(REPO, 'examples', 'masterkey.yaml'), '--wait=false']);
  await eventually('payments deleted', 30_000, async () =>
    (await getOrUndefined(`${masterKeysPath}/payments`)) ? undefined : true,
  );
});

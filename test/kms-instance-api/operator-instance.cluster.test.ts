import { createHash } from 'node:crypto';
import { freePort } from '../../src/common/wait';
import type { KubeObject } from '../../src/runtime/kube-client';
import { MESSAGES } from '../../src/kms-instance-api/messages';
import { decode as decodeMessage, encode } from '../../src/kms-instance-api/protobuf';
import {
  rawClientKey,
  sendInstanceRequest,
  signedInstanceRequest,
} from '../helpers/instance-client';
import { instanceSdkSuite, type SuiteTarget } from '../helpers/instance-sdk-suite';
import { foreignClientKey, provision } from '../helpers/instance-provisioning';
import { prepareSdk, runSdk, type Sdk } from '../helpers/instance-sdks';
import { startKms } from '../helpers/kms-process';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  decode,
  decryptSecret,
  leakScanTests,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitAllReady,
  type SecretObject,
} from '../helpers/operator-suite';
import { eventually } from '../helpers/wait';

/**
 * `datakey operator --kms-instance-listen`: the MasterKey's key belongs to the
 * built-in instance, so an application holding a DataKey's Secret opens it
 * with the official instance SDKs (Standard flow first, Advance after the
 * rotations of the SDK suites), and the whole case list passes
 * against the operator's core.
 */

const suite = useOperatorSuite('instance');
const SDKS: Sdk[] = ['go', 'python', 'java'];
const DATAKEY = 'orders-key';
let op: OperatorProcess;
let target: SuiteTarget;
let lastSecret: SecretObject | undefined;

beforeAll(async () => {
  const port = await freePort();
  op = await suite.start({ args: ['--kms-instance-listen', `127.0.0.1:${port}`] });
  const mk = suite.mk('orders');
  suite.extraMasterKeys.push(mk);
  expect((await applyObjects([masterKey(mk)])).code).toBe(0);
  expect(
    (await applyObjects([dataKey(suite.ns, DATAKEY, { masterKeyRef: { name: mk } })])).code,
  ).toBe(0);
  await waitAllReady(suite.ns, 1, 60_000);
  const status = (
    await client.get<KubeObject & { status?: { keyId?: string } }>(`${masterKeysPath}/${mk}`)
  ).status;
  const other = await startKms({ args: ['--instance-listen', '127.0.0.1:0'] });
  target = {
    openApi: {
      url: op.kmsUrl as string,
      accessKeyId: op.accessKeyId,
      accessKeySecret: op.accessKeySecret,
    },
    instanceEndpoint: `127.0.0.1:${port}`,
    foreign: await foreignClientKey(other),
    keyId: status?.keyId,
  };
  await other.stop();
}, 180_000);

/** Decrypts the DataKey's Secret with each SDK; the same data key as the OpenAPI's Decrypt. */
async function secretOpensWithEverySdk(flow: 'Standard' | 'Advance'): Promise<void> {
  const secret = await eventually(`Secret in the ${flow} flow`, 120_000, async () => {
    const s = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${DATAKEY}`);
    return decode(s.data?.flow) === flow ? s : undefined;
  });
  lastSecret = secret;
  // Layout 2: every value is the text the KMS API takes (ciphertextBlob, iv and
  // aad as base64 text), exactly what a mounted Secret file holds.
  const values = Object.fromEntries(
    Object.entries(secret.data ?? {}).map(([k, v]) => [k, decode(v)]),
  );
  const expected = await decryptSecret(op, secret);
  const p = await provision(target.openApi, target.keyId);
  for (const sdk of SDKS) {
    const results = await runSdk(await prepareSdk(sdk), {
      phase: 'secret',
      endpoint: target.instanceEndpoint,
      ca: p.ca,
      clients: p.clients,
      secret: values,
    });
    expect({ sdk, ...results.secretDecrypt }).toEqual({
      sdk,
      ok: true,
      plaintextDigest: createHash('sha256').update(expected).digest('hex'),
    });
  }
}

test(
  'a Standard-flow DataKey Secret opens with the instance SDKs (Decrypt, Aad = encryptionContext)',
  () => secretOpensWithEverySdk('Standard'),
  600_000,
);

for (const sdk of SDKS) instanceSdkSuite(sdk, () => target);

test('after the MasterKey rotates, the Advance-flow Secret opens with the instance SDKs (AdvanceDecrypt, aad)', async () => {
  // The operator re-wraps its DataKeys on the rotate annotation (a CreateKeyVersion
  // through the API, as the SDK suites do, rotates the key but not the Secrets).
  await client.mergePatch(`${masterKeysPath}/${suite.mk('orders')}`, {
    metadata: { annotations: { 'kms.datakey.io/rotate': 'instance-test' } },
  });
  await secretOpensWithEverySdk('Advance');
}, 300_000);

test('a client key created through one replica works at once on another', async () => {
  const port = await freePort();
  const second = await suite.start({ args: ['--kms-instance-listen', `127.0.0.1:${port}`] });
  const p = await provision(target.openApi, target.keyId);
  const key = rawClientKey(p.clients.good);
  const body = encode(MESSAGES.GenerateRandom.request, { Length: 16 });
  const res = await sendInstanceRequest(
    `https://127.0.0.1:${port}`,
    p.ca,
    signedInstanceRequest(key, 'GenerateRandom', body),
  );
  expect(res.status).toBe(200);
  expect((decodeMessage(MESSAGES.GenerateRandom.response, res.body).Random as Buffer).length).toBe(
    16,
  );
  await second.stop();
}, 120_000);

leakScanTests(suite, () => lastSecret);

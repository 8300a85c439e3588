import { randomBytes } from 'node:crypto';
import type { DataKey } from '../../src/api/types';
import { setCondition } from '../../src/runtime/conditions';
import {
  boundAad,
  boundContext,
  generationsFromSecret,
  generationsFromStatus,
  secretManifest,
  statusFields,
  type SecretObject,
  type WrappedDataKey,
} from '../../src/datakey';
import { openCore } from '../kms/core-helpers';

const dataKey = (namespace: string, name: string, context?: Record<string, string>): DataKey => ({
  apiVersion: 'kms.datakey.io/v1alpha1',
  kind: 'DataKey',
  metadata: { namespace, name, uid: 'uid-1' },
  spec: { masterKeyRef: { name: 'payments' }, encryptionContext: context },
});

const CREATED = '2026-01-01T00:00:00.000Z';
const gen = (w: WrappedDataKey, generation = 1) => ({ ...w, generation, creationTime: CREATED });
/** A Secret as the API returns it (the manifest's data, metadata with a creation time). */
const asStored = (m: ReturnType<typeof secretManifest>): SecretObject =>
  ({ ...m, metadata: { ...m.metadata, creationTimestamp: CREATED } }) as unknown as SecretObject;

test('the Secret decrypts with its own stored context, and only for the same namespace and name', async () => {
  const { core } = await openCore();
  const { keyId } = await core.createKey({});
  const dk = dataKey('shop', 'orders', { app: 'orders' });
  const sealed = core.generateDataKey({ keyId, encryptionContext: boundContext(dk) });
  const secret = secretManifest(dk, [gen({ ...sealed, flow: 'Standard' })]);
  const read = (k: string) => Buffer.from(secret.data[k], 'base64');
  // Layout 2: every value is the string the KMS API takes; the blob as GenerateDataKey returned it.
  const blobText = read('ciphertextBlob').toString('utf8');

  expect(secret.type).toBe('kms.datakey.io/datakey');
  expect(secret.metadata.labels['kms.datakey.io/layout']).toBe('2');
  expect(blobText).toBe(sealed.ciphertextBlob.toString('base64'));
  expect(read('generation').toString()).toBe('1');
  expect(JSON.parse(read('generations').toString())).toEqual([
    {
      generation: 1,
      keyVersionId: sealed.keyVersionId,
      flow: 'Standard',
      ciphertextBlob: blobText,
      creationTime: CREATED,
    },
  ]);
  expect(secret.metadata.ownerReferences[0]).toMatchObject({
    kind: 'DataKey',
    controller: true,
    uid: 'uid-1',
  });
  expect(Object.keys(secret.data).sort()).toEqual([
    'ciphertextBlob',
    'encryptionContext',
    'flow',
    'generation',
    'generations',
    'keyId',
    'keyVersionId',
  ]);
  expect(secret.data.ciphertextBlob).not.toContain(sealed.plaintext.toString('base64'));
  const context = JSON.parse(read('encryptionContext').toString());
  expect(context).toEqual({
    app: 'orders',
    'kms.datakey.io/name': 'orders',
    'kms.datakey.io/namespace': 'shop',
  });
  const opened = core.decrypt({
    ciphertextBlob: Buffer.from(blobText, 'base64'),
    encryptionContext: context,
  });
  expect(opened.plaintext.equals(sealed.plaintext)).toBe(true);

  // The same Secret copied to another namespace carries a context that no longer matches.
  const elsewhere = boundContext(dataKey('other', 'orders', { app: 'orders' }));
  expect(() =>
    core.decrypt({ ciphertextBlob: Buffer.from(blobText, 'base64'), encryptionContext: elsewhere }),
  ).toThrow(/CiphertextBlob/);
});

test('Advance layout: algorithm, iv and aad beside the blob; AdvanceDecrypt opens it with the aad', async () => {
  const { core } = await openCore();
  const { keyId } = await core.createKey({});
  const dk = dataKey('shop', 'orders');
  const sealed = core.advanceGenerateDataKey({ keyId, numberOfBytes: 32, aad: boundAad(dk) });
  const secret = secretManifest(dk, [gen({ ...sealed, flow: 'Advance' })]);
  expect(Object.keys(secret.data).sort()).toEqual([
    'aad',
    'algorithm',
    'ciphertextBlob',
    'flow',
    'generation',
    'generations',
    'iv',
    'keyId',
    'keyVersionId',
  ]);
  const text = (k: string) => Buffer.from(secret.data[k], 'base64').toString('utf8');
  expect(text('iv')).toBe(sealed.iv.toString('base64'));
  const opened = core.advanceDecrypt({
    ciphertextBlob: Buffer.from(text('ciphertextBlob'), 'base64'),
    aad: Buffer.from(text('aad'), 'base64'),
  });
  expect(opened.plaintext.equals(sealed.plaintext)).toBe(true);
  const [back] = generationsFromSecret(asStored(secret));
  expect(back).toMatchObject({ flow: 'Advance', keyVersionId: sealed.keyVersionId, generation: 1 });
  expect(back.iv?.equals(sealed.iv)).toBe(true);
});

test('every kept generation is in the Secret and in status, the same entries; both read back', async () => {
  const { core } = await openCore();
  const { keyId } = await core.createKey({});
  const dk = dataKey('shop', 'orders');
  const generations = [1, 2, 3].map((n) =>
    gen(
      {
        ...core.generateDataKeyWithoutPlaintext({ keyId, encryptionContext: boundContext(dk) }),
        flow: 'Standard',
      },
      n,
    ),
  );
  const secret = secretManifest(dk, generations);
  const inSecret = JSON.parse(Buffer.from(secret.data.generations, 'base64').toString());
  const status = statusFields(dk, generations);
  expect(status.generations).toEqual(inSecret);
  expect(status.currentGeneration).toBe(3);
  expect(Buffer.from(secret.data.generation, 'base64').toString()).toBe('3');
  expect(Buffer.from(secret.data.ciphertextBlob, 'base64').toString()).toBe(status.ciphertextBlob);
  const strip = (gs: WrappedDataKey[]) => gs.map((g) => ({ ...g, iv: undefined }));
  expect(strip(generationsFromSecret(asStored(secret)))).toEqual(strip(generations));
  expect(strip(generationsFromStatus(status, undefined))).toEqual(strip(generations));
});

test('a Secret and status of the first layout read as generation 1 with the same ciphertext', () => {
  const blob = randomBytes(40);
  const b64 = (v: string) => Buffer.from(v).toString('base64');
  const firstLayout = {
    metadata: { name: 'orders', creationTimestamp: CREATED },
    data: {
      keyId: b64('key-1'),
      keyVersionId: b64('v1'),
      flow: b64('Standard'),
      ciphertextBlob: blob.toString('base64'), // raw bytes in the first layout
    },
  };
  const [fromSecret] = generationsFromSecret(firstLayout);
  expect(fromSecret).toMatchObject({ generation: 1, keyId: 'key-1', creationTime: CREATED });
  expect(fromSecret.ciphertextBlob.equals(blob)).toBe(true);
  const [fromStatus] = generationsFromStatus(
    {
      keyId: 'key-1',
      keyVersionId: 'v1',
      flow: 'Standard',
      ciphertextBlob: blob.toString('base64'),
    },
    CREATED,
  );
  expect(fromStatus.ciphertextBlob.equals(blob)).toBe(true);
});

test('user context cannot override the identity binding', () => {
  const context = boundContext(dataKey('a', 'b', { 'kms.datakey.io/namespace': 'evil' }));
  expect(context['kms.datakey.io/namespace']).toBe('a');
});

test('an incomplete Secret is not mistaken for a data key', () => {
  expect(generationsFromSecret(undefined)).toEqual([]);
  expect(
    generationsFromSecret({
      metadata: { name: 'x' },
      data: { ciphertextBlob: randomBytes(8).toString('base64') },
    }),
  ).toEqual([]);
});

test('conditions: lastTransitionTime moves only when the status changes', () => {
  const t1 = new Date('2026-01-01T00:00:00Z');
  const t2 = new Date('2026-01-02T00:00:00Z');
  const a = setCondition(
    undefined,
    { type: 'Ready', status: 'False', reason: 'Pending', message: 'x' },
    t1,
  );
  const b = setCondition(a, { type: 'Ready', status: 'False', reason: 'Other', message: 'y' }, t2);
  expect(b[0]).toMatchObject({ reason: 'Other', lastTransitionTime: '2026-01-01T00:00:00Z' });
  const c = setCondition(b, { type: 'Ready', status: 'True', reason: 'Ready', message: 'z' }, t2);
  expect(c).toHaveLength(1);
  expect(c[0].lastTransitionTime).toBe('2026-01-02T00:00:00Z');
});

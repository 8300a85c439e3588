import { randomBytes } from 'node:crypto';
import type { DataKey } from '../../src/api/types';
import { setCondition } from '../../src/runtime/conditions';
import { boundAad, boundContext, secretManifest, wrappedFromSecret } from '../../src/datakey';
import { openCore } from '../kms/core-helpers';

const dataKey = (namespace: string, name: string, context?: Record<string, string>): DataKey => ({
  apiVersion: 'kms.datakey.io/v1alpha1',
  kind: 'DataKey',
  metadata: { namespace, name, uid: 'uid-1' },
  spec: { masterKeyRef: { name: 'payments' }, encryptionContext: context },
});

test('the Secret decrypts with its own stored context, and only for the same namespace and name', async () => {
  const { core } = await openCore();
  const { keyId } = await core.createKey({});
  const dk = dataKey('shop', 'orders', { app: 'orders' });
  const sealed = core.generateDataKey({ keyId, encryptionContext: boundContext(dk) });
  const secret = secretManifest(dk, { ...sealed, flow: 'Standard' });
  const read = (k: string) => Buffer.from(secret.data[k], 'base64');

  expect(secret.type).toBe('kms.datakey.io/datakey');
  expect(secret.metadata.ownerReferences[0]).toMatchObject({
    kind: 'DataKey',
    controller: true,
    uid: 'uid-1',
  });
  expect(Object.keys(secret.data).sort()).toEqual([
    'ciphertextBlob',
    'encryptionContext',
    'flow',
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
    ciphertextBlob: read('ciphertextBlob'),
    encryptionContext: context,
  });
  expect(opened.plaintext.equals(sealed.plaintext)).toBe(true);

  // The same Secret copied to another namespace carries a context that no longer matches.
  const elsewhere = boundContext(dataKey('other', 'orders', { app: 'orders' }));
  expect(() =>
    core.decrypt({ ciphertextBlob: read('ciphertextBlob'), encryptionContext: elsewhere }),
  ).toThrow(/CiphertextBlob/);
});

test('Advance layout: algorithm, iv and aad beside the blob; AdvanceDecrypt opens it with the aad', async () => {
  const { core } = await openCore();
  const { keyId } = await core.createKey({});
  const dk = dataKey('shop', 'orders');
  const sealed = core.advanceGenerateDataKey({ keyId, numberOfBytes: 32, aad: boundAad(dk) });
  const secret = secretManifest(dk, { ...sealed, flow: 'Advance' });
  expect(Object.keys(secret.data).sort()).toEqual([
    'aad',
    'algorithm',
    'ciphertextBlob',
    'flow',
    'iv',
    'keyId',
    'keyVersionId',
  ]);
  const opened = core.advanceDecrypt({
    ciphertextBlob: Buffer.from(secret.data.ciphertextBlob, 'base64'),
    aad: Buffer.from(secret.data.aad, 'base64'),
  });
  expect(opened.plaintext.equals(sealed.plaintext)).toBe(true);
  expect(wrappedFromSecret(secret.data)).toMatchObject({
    flow: 'Advance',
    keyVersionId: sealed.keyVersionId,
  });
});

test('user context cannot override the identity binding', () => {
  const context = boundContext(dataKey('a', 'b', { 'kms.datakey.io/namespace': 'evil' }));
  expect(context['kms.datakey.io/namespace']).toBe('a');
});

test('an incomplete Secret is not mistaken for a data key', () => {
  expect(wrappedFromSecret(undefined)).toBeUndefined();
  expect(wrappedFromSecret({ ciphertextBlob: randomBytes(8).toString('base64') })).toBeUndefined();
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

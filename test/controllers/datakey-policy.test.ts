import { DataKeyReason } from '../../src/api/conditions';
import type { DataKey, MasterKey } from '../../src/api/types';
import {
  dataKeyBytes,
  generationFlow,
  isOwnedBy,
  masterKeyBlocks,
  needsRewrap,
  secretAction,
  storedCopiesInOrder,
  WAIT_MS,
} from '../../src/controllers/datakey-policy';
import { secretManifest, type SecretObject, type WrappedDataKey } from '../../src/datakey';

const V1 = '11111111-1111-4111-8111-111111111111';
const V2 = '22222222-2222-4222-8222-222222222222';

const dataKey = (spec: Partial<DataKey['spec']> = {}): DataKey => ({
  apiVersion: 'kms.datakey.io/v1alpha1',
  kind: 'DataKey',
  metadata: { namespace: 'shop', name: 'orders', uid: 'dk-uid' },
  spec: { masterKeyRef: { name: 'payments' }, ...spec },
});

const masterKey = (
  patch: { enabled?: boolean; ready?: boolean; deleting?: boolean } = {},
): MasterKey => ({
  apiVersion: 'kms.datakey.io/v1alpha1',
  kind: 'MasterKey',
  metadata: {
    name: 'payments',
    deletionTimestamp: patch.deleting ? '2026-01-01T00:00:00Z' : undefined,
  },
  spec: { enabled: patch.enabled },
  status: {
    keyId: 'key-1',
    conditions: [
      {
        type: 'Ready',
        status: patch.ready === false ? 'False' : 'True',
        reason: 'KeyEnabled',
        message: '',
        lastTransitionTime: '2026-01-01T00:00:00Z',
      },
    ],
  },
});

const wrapped = (keyVersionId: string, tag: string): WrappedDataKey => ({
  keyId: 'key-1',
  keyVersionId,
  flow: 'Standard',
  ciphertextBlob: Buffer.from(tag),
});

describe('masterKeyBlocks', () => {
  test.each([
    ['missing', undefined, DataKeyReason.MasterKeyNotFound],
    ['being deleted', masterKey({ deleting: true }), DataKeyReason.MasterKeyNotFound],
    ['disabled', masterKey({ enabled: false }), DataKeyReason.MasterKeyDisabled],
    ['not Ready', masterKey({ ready: false }), DataKeyReason.MasterKeyNotReady],
  ])('a MasterKey %s makes the DataKey wait', (_what, mk, reason) => {
    expect(masterKeyBlocks(dataKey(), mk)).toMatchObject({
      kind: 'wait',
      reason,
      delayMs: WAIT_MS,
    });
  });

  test('a Ready, enabled MasterKey lets it proceed', () => {
    expect(masterKeyBlocks(dataKey(), masterKey())).toBeUndefined();
  });
});

describe('storedCopiesInOrder', () => {
  test('the Secret copy wins when both are on the same version', () => {
    const order = storedCopiesInOrder({ secret: wrapped(V1, 's'), status: wrapped(V1, 't') }, V1);
    expect(order.map((c) => c.ciphertextBlob.toString())).toEqual(['s', 't']);
  });

  test('after a crash mid re-wrap, the copy under the primary version comes first', () => {
    const order = storedCopiesInOrder({ secret: wrapped(V1, 's'), status: wrapped(V2, 't') }, V2);
    expect(order.map((c) => c.ciphertextBlob.toString())).toEqual(['t', 's']);
  });

  test('no copy, nothing to try (a new data key is generated)', () => {
    expect(storedCopiesInOrder({}, V1)).toEqual([]);
  });
});

test('a found key under an old version is re-wrapped; a just generated one never', () => {
  expect(needsRewrap(wrapped(V1, 'x'), false, V2)).toBe(true);
  expect(needsRewrap(wrapped(V2, 'x'), false, V2)).toBe(false);
  expect(needsRewrap(wrapped(V1, 'x'), true, V2)).toBe(false);
});

test('a rotated master key generates in the Advance flow', () => {
  expect(generationFlow(true)).toBe('Advance');
  expect(generationFlow(false)).toBe('Standard');
});

test('numberOfBytes wins over keySpec; AES_256 by default', () => {
  expect(dataKeyBytes(dataKey())).toBe(32);
  expect(dataKeyBytes(dataKey({ keySpec: 'AES_128' }))).toBe(16);
  expect(dataKeyBytes(dataKey({ keySpec: 'AES_128', numberOfBytes: 64 }))).toBe(64);
});

describe('secretAction', () => {
  const dk = dataKey();
  const manifest = secretManifest(dk, wrapped(V1, 'blob'));
  const stored = (patch: Partial<SecretObject> = {}, owner = 'dk-uid'): SecretObject => ({
    ...manifest,
    metadata: {
      ...manifest.metadata,
      ownerReferences: [{ ...manifest.metadata.ownerReferences[0], uid: owner }],
    },
    ...patch,
  });

  test('a Secret the DataKey does not own is refused, never touched', () => {
    const decision = secretAction(dk, stored({}, 'someone-else'), manifest, false);
    expect(decision).toMatchObject({
      action: 'refuse',
      outcome: { kind: 'wait', reason: DataKeyReason.SecretConflict },
    });
    expect(isOwnedBy(stored({}, 'someone-else'), dk)).toBe(false);
  });

  test('a matching Secret is left alone', () => {
    expect(secretAction(dk, stored(), manifest, false)).toEqual({ action: 'none' });
  });

  test('a missing Secret is created; restored only when the key did not just change', () => {
    expect(secretAction(dk, undefined, manifest, false)).toEqual({
      action: 'create',
      restored: true,
    });
    expect(secretAction(dk, undefined, manifest, true)).toEqual({
      action: 'create',
      restored: false,
    });
  });

  test('an edited Secret is replaced with the same data key', () => {
    const edited = stored({ data: { ...manifest.data, extra: 'eA==' } });
    expect(secretAction(dk, edited, manifest, false)).toEqual({
      action: 'replace',
      restored: true,
    });
    expect(secretAction(dk, edited, manifest, true)).toEqual({
      action: 'replace',
      restored: false,
    });
  });
});

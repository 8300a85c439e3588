import type { DataKey, MasterKey } from '../../src/api/types';
import {
  aliasChanges,
  deletionBlockers,
  enabledChange,
  mattersToDataKeys,
  MAX_TIMER_MS,
  nextCheckMs,
  rewrapProgress,
  rotationPolicyDiffers,
  rotationRequested,
} from '../../src/controllers/masterkey-policy';
import type { KeyMetadata } from '../../src/kms';

const masterKey = (patch: Partial<MasterKey> = {}): MasterKey => ({
  apiVersion: 'kms.datakey.io/v1alpha1',
  kind: 'MasterKey',
  metadata: { name: 'payments', generation: 1 },
  spec: {},
  ...patch,
});

const meta = (patch: Partial<KeyMetadata> = {}): KeyMetadata =>
  ({
    keyId: 'key-1',
    keyState: 'Enabled',
    automaticRotation: 'Disabled',
    primaryKeyVersion: 'v1',
    ...patch,
  }) as KeyMetadata;

const dataKey = (ns: string, name: string, master: string, version?: string): DataKey => ({
  apiVersion: 'kms.datakey.io/v1alpha1',
  kind: 'DataKey',
  metadata: { namespace: ns, name },
  spec: { masterKeyRef: { name: master } },
  status: version ? { keyVersionId: version } : undefined,
});

test('the rotate annotation asks once per distinct value', () => {
  const annotated = (value: string, seen?: string) =>
    masterKey({
      metadata: { name: 'payments', annotations: { 'kms.datakey.io/rotate': value } },
      status: { rotateAnnotationSeen: seen },
    });
  expect(rotationRequested(annotated('a'))).toBe('a');
  expect(rotationRequested(annotated('a', 'a'))).toBeUndefined();
  expect(rotationRequested(annotated('b', 'a'))).toBe('b');
  expect(rotationRequested(masterKey())).toBeUndefined();
});

test('the rotation policy is updated only when the spec differs from the core', () => {
  const auto = masterKey({ spec: { rotation: { automatic: true, interval: '30d' } } });
  expect(rotationPolicyDiffers(auto, meta())).toBe(true);
  expect(
    rotationPolicyDiffers(
      auto,
      meta({ automaticRotation: 'Enabled', rotationInterval: '2592000s' }),
    ),
  ).toBe(false);
  expect(
    rotationPolicyDiffers(
      auto,
      meta({ automaticRotation: 'Enabled', rotationInterval: '604800s' }),
    ),
  ).toBe(true);
  expect(rotationPolicyDiffers(masterKey(), meta())).toBe(false);
});

test('the key is enabled or disabled to match spec.enabled', () => {
  expect(enabledChange(masterKey({ spec: { enabled: false } }), meta())).toBe('disable');
  expect(enabledChange(masterKey(), meta({ keyState: 'Disabled' }))).toBe('enable');
  expect(enabledChange(masterKey(), meta())).toBeUndefined();
});

test('aliases are removed and added to match the spec', () => {
  const mk = masterKey({ spec: { aliases: ['alias/a', 'alias/b'] } });
  expect(aliasChanges(mk, ['alias/b', 'alias/old'])).toEqual({
    remove: ['alias/old'],
    add: ['alias/a'],
  });
});

test('re-wrap progress counts only this MasterKey’s DataKeys on the primary version', () => {
  const dks = [
    dataKey('a', 'x', 'payments', 'v2'),
    dataKey('a', 'y', 'payments', 'v1'),
    dataKey('b', 'z', 'other', 'v1'),
  ];
  expect(rewrapProgress('payments', dks, 'v2')).toEqual({ rewrapped: 1, total: 2 });
});

test('the next check: every second while re-wrapping, else at the next rotation, capped at a day', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  expect(nextCheckMs(meta(), { rewrapped: 1, total: 2 }, now)).toBe(1000);
  expect(nextCheckMs(meta(), { rewrapped: 2, total: 2 }, now)).toBe(MAX_TIMER_MS);
  const soon = meta({ nextRotationDate: '2026-01-01T00:00:10Z' });
  expect(nextCheckMs(soon, { rewrapped: 0, total: 0 }, now)).toBe(10_500);
});

test('deletion is blocked by the DataKeys that reference the MasterKey, named in order', () => {
  const dks = [
    dataKey('b', 'y', 'payments'),
    dataKey('a', 'x', 'payments'),
    dataKey('a', 'z', 'other'),
  ];
  expect(deletionBlockers('payments', dks)).toEqual(['a/x', 'b/y']);
});

test('rotation progress alone does not wake the DataKeys; a new primary version does', () => {
  const before = masterKey({ status: { keyId: 'k', primaryKeyVersion: 'v1' } });
  expect(
    mattersToDataKeys(before, {
      ...before,
      status: { ...before.status, rotation: { rewrapped: 1, total: 2 } },
    }),
  ).toBe(false);
  expect(
    mattersToDataKeys(before, { ...before, status: { ...before.status, primaryKeyVersion: 'v2' } }),
  ).toBe(true);
});

import { DataKeyReason } from '../../src/api/conditions';
import type { DataKey, MasterKey } from '../../src/api/types';
import {
  candidatesByGeneration,
  dataKeyBytes,
  generationFlow,
  isOwnedBy,
  keptGenerations,
  masterKeyBlocks,
  needsRewrap,
  nextGenerationNumber,
  nextRegenerationTime,
  regenerationDue,
  secretAction,
  secretIsBehind,
  tokensSeenWith,
  WAIT_MS,
} from '../../src/controllers/datakey-policy';
import { secretManifest, type SecretObject, type WrappedGeneration } from '../../src/datakey';

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

const T0 = Date.parse('2026-01-01T00:00:00Z');
const wrapped = (keyVersionId: string, tag: string, generation = 1): WrappedGeneration => ({
  keyId: 'key-1',
  keyVersionId,
  flow: 'Standard',
  ciphertextBlob: Buffer.from(tag),
  generation,
  creationTime: new Date(T0 + (generation - 1) * 3600_000).toISOString(),
});
const tags = (groups: WrappedGeneration[][]) =>
  groups.map((g) => g.map((c) => c.ciphertextBlob.toString()));

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

describe('candidatesByGeneration: the union of the Secret and status copies', () => {
  test('the Secret copy is tried first when both are on the same version; identical copies once', () => {
    const s1 = wrapped(V1, 's1', 1);
    const order = candidatesByGeneration(
      { secret: [s1, wrapped(V1, 's2', 2)], status: [s1, wrapped(V1, 't2', 2)] },
      V1,
    );
    expect(tags(order)).toEqual([['s1'], ['s2', 't2']]);
  });

  test('after a crash mid re-wrap, the copy under the primary version comes first', () => {
    const order = candidatesByGeneration(
      { secret: [wrapped(V1, 's', 1)], status: [wrapped(V2, 't', 1)] },
      V2,
    );
    expect(tags(order)).toEqual([['t', 's']]);
  });

  test('killed after the status recorded a new generation, before the Secret: the new one is kept', () => {
    const order = candidatesByGeneration(
      {
        secret: [wrapped(V1, 'g1', 1), wrapped(V1, 'g2', 2)],
        status: [wrapped(V1, 'g1', 1), wrapped(V1, 'g2', 2), wrapped(V1, 'g3', 3)],
      },
      V1,
    );
    expect(tags(order)).toEqual([['g1'], ['g2'], ['g3']]);
  });

  test('a Secret holding a generation the status lacks (status lost) keeps it too', () => {
    const order = candidatesByGeneration(
      { secret: [wrapped(V1, 'g1', 1), wrapped(V1, 'g2', 2)], status: [] },
      V1,
    );
    expect(tags(order)).toEqual([['g1'], ['g2']]);
  });

  test('no copy, nothing to try (a new data key is generated)', () => {
    expect(candidatesByGeneration({ secret: [], status: [] }, V1)).toEqual([]);
  });
});

describe('generations kept and numbered', () => {
  const four = [4, 2, 3, 1].map((n) => wrapped(V1, `g${n}`, n));
  test('keepPrevious + 1 newest, ascending, oldest dropped first', () => {
    expect(keptGenerations(four, 1).map((g) => g.generation)).toEqual([3, 4]);
    expect(keptGenerations(four, 0).map((g) => g.generation)).toEqual([4]);
    expect(keptGenerations(four, 10).map((g) => g.generation)).toEqual([1, 2, 3, 4]);
  });
  test('a new number is one past every number ever seen', () => {
    expect(nextGenerationNumber([])).toBe(1);
    expect(nextGenerationNumber([3, 5, 4])).toBe(6);
  });
});

describe('regenerationDue: one generation per token, one per schedule tick', () => {
  const current = wrapped(V1, 'g2', 2); // created at T0 + 1 h
  const withToken = (token: string | undefined, seen: string[] = []) => ({
    ...dataKey({ regeneration: { interval: '1h' } }),
    metadata: {
      namespace: 'shop',
      name: 'orders',
      uid: 'dk-uid',
      annotations: token ? { 'kms.datakey.io/regenerate': token } : undefined,
    },
    status: { regenerateTokensSeen: seen },
  });

  test('an unseen token is due; a seen one (even long dropped from generations) never again', () => {
    expect(regenerationDue(withToken('a'), current, T0 + 3600_000, 1)).toEqual({
      token: 'a',
      scheduled: false,
    });
    expect(regenerationDue(withToken('a', ['a']), current, T0 + 3600_000, 1)).toBeUndefined();
  });

  test('the schedule counts from the current generation: a recorded generation moves it forward', () => {
    const dk = withToken(undefined);
    expect(regenerationDue(dk, current, T0 + 2 * 3600_000 - 1, 1)).toBeUndefined();
    expect(regenerationDue(dk, current, T0 + 2 * 3600_000, 1)).toEqual({
      token: undefined,
      scheduled: true,
    });
    // Once generation 3 is recorded (at T0 + 2 h), the same instant is no longer due.
    const three = { ...wrapped(V1, 'g3', 3), creationTime: new Date(T0 + 7200_000).toISOString() };
    expect(regenerationDue(dk, three, T0 + 2 * 3600_000, 1)).toBeUndefined();
    expect(nextRegenerationTime(dk, three, 1)).toBe(new Date(T0 + 3 * 3600_000).toISOString());
  });

  test('no interval, or one below the minimum: no schedule', () => {
    expect(nextRegenerationTime(dataKey(), current, 1)).toBeUndefined();
    expect(
      nextRegenerationTime(dataKey({ regeneration: { interval: '1h' } }), current, 7 * 86400),
    ).toBeUndefined();
  });

  test('tokens seen: the last 16, oldest dropped first, no duplicates', () => {
    const seen = Array.from({ length: 16 }, (_, i) => `t${i}`);
    expect(tokensSeenWith(seen, 'new')).toEqual([...seen.slice(1), 'new']);
    expect(tokensSeenWith(['a'], 'a')).toEqual(['a']);
    expect(tokensSeenWith(undefined, undefined)).toEqual([]);
  });
});

test('kept generations are re-wrapped when any of them is under another version', () => {
  expect(needsRewrap([wrapped(V2, 'a', 1), wrapped(V1, 'b', 2)], V2)).toBe(true);
  expect(needsRewrap([wrapped(V2, 'a', 1), wrapped(V2, 'b', 2)], V2)).toBe(false);
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
  const manifest = secretManifest(dk, [wrapped(V1, 'blob')]);
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

  test('a Secret merely behind (first layout, interrupted write) is rewritten without a restore event', () => {
    const firstLayout = stored({
      metadata: { ...manifest.metadata, labels: { 'kms.datakey.io/datakey': 'orders' } },
    });
    expect(secretAction(dk, firstLayout, manifest, false, true)).toEqual({
      action: 'replace',
      restored: false,
    });
  });
});

describe('secretIsBehind: an interrupted write or the first layout, not an edit', () => {
  const dk = dataKey();
  const older = secretManifest(dk, [wrapped(V1, 'g1', 1)]);
  const rebuilt = older.data;
  const asSecret = (
    m: typeof older,
    labels: Record<string, string> = m.metadata.labels,
  ): SecretObject => ({
    ...m,
    metadata: { ...m.metadata, labels },
  });

  test('a consistent layout-2 Secret of an earlier state whose generations open', () => {
    expect(secretIsBehind(dk, asSecret(older), rebuilt, true)).toBe(true);
    expect(secretIsBehind(dk, asSecret(older), rebuilt, false)).toBe(false);
  });

  test('a top-level value edited, or the label removed: an edit (restored)', () => {
    const edited = { ...asSecret(older), data: { ...rebuilt, ciphertextBlob: 'eA==' } };
    expect(secretIsBehind(dk, edited, rebuilt, true)).toBe(false);
    expect(secretIsBehind(dk, asSecret(older, {}), rebuilt, true)).toBe(false);
  });

  test('a first-layout Secret (no generations) whose key opens', () => {
    const { generations: _g, generation: _n, ...first } = rebuilt;
    const firstLayout = {
      ...asSecret(older, { 'kms.datakey.io/datakey': 'orders' }),
      data: first,
    };
    expect(secretIsBehind(dk, firstLayout, rebuilt, true)).toBe(true);
  });
});

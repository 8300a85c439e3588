import { randomBytes, randomUUID } from 'node:crypto';
import { KmsCore, MemoryKeyStore, RootKey, type StoreContents } from '../../src/kms';
import { codeOf } from './core-helpers';

/**
 * Two replicas over one key store: a key version made through one must open
 * through the other even before that one's own reload (after a miss, the core
 * reloads and looks again), and misses must not turn into a flood of reloads.
 */

/** A shared store that counts loads. */
class CountingStore extends MemoryKeyStore {
  loads = 0;
  override load(): Promise<StoreContents> {
    this.loads++;
    return super.load();
  }
}

/** `second` is told the store may have changed as long as `changed.value` says so. */
async function twoReplicas(missReloadIntervalMs = 200) {
  const store = new CountingStore();
  const material = randomBytes(32);
  const changed = { value: true };
  const open = () =>
    KmsCore.open({
      store,
      rootKey: new RootKey(Buffer.from(material)),
      missReloadIntervalMs,
      storeMayHaveChanged: () => changed.value,
    });
  const first = await open();
  const second = await open();
  return { store, first, second, changed };
}

test('a version rotated through one replica opens through the other, which reloads on the miss', async () => {
  const { first, second } = await twoReplicas();
  const { keyId } = await first.createKey({});
  await second.reload(); // both know the key; only `first` learns of the next version
  const v2 = await first.createKeyVersion(keyId);
  const sealed = first.advanceGenerateDataKey({ keyId, numberOfBytes: 32 });
  expect(sealed.keyVersionId).toBe(v2.keyVersionId);

  // Without a reload the stale replica does not know the version (the faults suite's failure).
  expect(await codeOf(() => second.advanceDecrypt({ ciphertextBlob: sealed.ciphertextBlob }))).toBe(
    'Forbidden.KeyNotFound',
  );
  const opened = await second.whenFresh(() =>
    second.advanceDecrypt({ ciphertextBlob: sealed.ciphertextBlob }),
  );
  expect(opened.keyVersionId).toBe(v2.keyVersionId);
  expect(opened.plaintext.equals(sealed.plaintext)).toBe(true);
});

test('a key created through one replica is described through the other (key and alias misses)', async () => {
  const { first, second } = await twoReplicas();
  const { keyId } = await first.createKey({});
  await first.createAlias('alias/made-elsewhere', keyId);
  expect((await second.whenFresh(() => second.describeKey(keyId))).keyId).toBe(keyId);
  expect((await second.whenFresh(() => second.resolveKey('alias/made-elsewhere'))).keyId).toBe(
    keyId,
  );
});

test('a miss that stays a miss is answered as one, and other errors are not retried', async () => {
  const { store, second } = await twoReplicas();
  const loads = store.loads;
  expect(await codeOf(() => second.whenFresh(() => second.describeKey(randomUUID())))).toBe(
    'Forbidden.KeyNotFound',
  );
  expect(store.loads).toBe(loads + 1);
  expect(
    await codeOf(() =>
      second.whenFresh(() => second.advanceDecrypt({ ciphertextBlob: randomBytes(64) })),
    ),
  ).toBe('InvalidParameter');
  expect(store.loads).toBe(loads + 1);
});

test('a flood of misses shares reloads: at most one per interval, each after the miss', async () => {
  const { store, second } = await twoReplicas(300);
  const loads = store.loads;
  const started = performance.now();
  const misses = Array.from({ length: 200 }, () =>
    codeOf(() => second.whenFresh(() => second.describeKey(randomUUID()))),
  );
  expect(new Set(await Promise.all(misses))).toEqual(new Set(['Forbidden.KeyNotFound']));
  expect(store.loads - loads).toBe(1);
  // A second wave right after waits for the interval, then shares one more reload.
  await codeOf(() => second.whenFresh(() => second.describeKey(randomUUID())));
  expect(store.loads - loads).toBe(2);
  expect(performance.now() - started).toBeGreaterThanOrEqual(290);
});

test('a failed reload answers the original miss', async () => {
  const { store, second } = await twoReplicas();
  store.load = () => Promise.reject(new Error('API server away'));
  expect(await codeOf(() => second.whenFresh(() => second.describeKey(randomUUID())))).toBe(
    'Forbidden.KeyNotFound',
  );
});

test('while nothing changed in the store, a miss is answered at once, without a reload', async () => {
  const { store, second, changed } = await twoReplicas();
  changed.value = false;
  const loads = store.loads;
  expect(await codeOf(() => second.whenFresh(() => second.describeKey(randomUUID())))).toBe(
    'Forbidden.KeyNotFound',
  );
  expect(store.loads).toBe(loads);
});

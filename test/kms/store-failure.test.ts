// The core when its key store fails a write: nothing becomes visible before it
// is saved (the cache changes only after the store acknowledged), and the
// writes after the failure succeed. A second core opened over the same store
// sees exactly what the first one shows, so cache and store never disagree.
import { randomBytes } from 'node:crypto';
import {
  KmsCore,
  ManualClock,
  MemoryKeyStore,
  RootKey,
  type StoredAlias,
  type StoredInstance,
  type StoredKey,
} from '../../src/kms';
import { codeOf } from './core-helpers';

const DAY_MS = 86_400_000;

/**
 * A memory store whose next `failures` writes throw. With `landFirst` a failing
 * write is applied before it throws: the answer was lost, not the write.
 */
class FailingStore extends MemoryKeyStore {
  failures = 0;
  landFirst = false;
  writes = 0;

  private async write(apply: () => Promise<void>): Promise<void> {
    this.writes++;
    if (this.failures > 0) {
      this.failures--;
      if (this.landFirst) await apply();
      throw new Error('the key store is unavailable');
    }
    await apply();
  }
  override putKey(key: StoredKey) {
    return this.write(() => super.putKey(key));
  }
  override deleteKey(keyId: string) {
    return this.write(() => super.deleteKey(keyId));
  }
  override putAlias(alias: StoredAlias) {
    return this.write(() => super.putAlias(alias));
  }
  override deleteAlias(aliasName: string) {
    return this.write(() => super.deleteAlias(aliasName));
  }
  override putInstance(instance: StoredInstance, create: boolean) {
    return this.write(() => super.putInstance(instance, create));
  }
}

async function failing() {
  const store = new FailingStore();
  const rootKey = new RootKey(randomBytes(32));
  const clock = new ManualClock(new Date('2026-03-01T00:00:00Z'));
  const core = await KmsCore.open({ store, rootKey, clock });
  return { core, store, rootKey, clock };
}

/** Runs `fn` with the store's next write failing; returns the error message. */
async function whenTheStoreFails(store: FailingStore, fn: () => Promise<unknown>): Promise<string> {
  store.failures = 1;
  const writesBefore = store.writes;
  try {
    await fn();
  } catch (err) {
    expect(store.writes).toBeGreaterThan(writesBefore);
    return (err as Error).message;
  } finally {
    store.failures = 0;
  }
  throw new Error('expected the call to fail with the store');
}

/** What a core shows: keys with their states and versions, aliases. */
function view(core: KmsCore) {
  const { keys } = core.listKeys({ pageNumber: 1, pageSize: 100 });
  return {
    keys: keys.map((keyId) => {
      const meta = core.describeKey(keyId);
      const versions = core.listKeyVersions(keyId, { pageNumber: 1, pageSize: 100 }).versions;
      return {
        keyId,
        keyState: meta.keyState,
        deleteDate: meta.deleteDate,
        automaticRotation: meta.automaticRotation,
        primary: meta.primaryKeyVersion,
        versions: versions.map((v) => v.keyVersionId),
      };
    }),
    aliases: core.listAliases({ pageNumber: 1, pageSize: 100 }).aliases,
  };
}

describe('a key-store write that fails', () => {
  test('creating a key: the key does not exist; the next create succeeds', async () => {
    const { core, store } = await failing();
    const keyId = '0b7f2a52-3c1e-4a8e-9d1b-5a8a1c2e3f40';
    expect(await whenTheStoreFails(store, () => core.createKey({ keyId }))).toBe(
      'the key store is unavailable',
    );
    expect(core.listKeys({ pageNumber: 1, pageSize: 10 }).totalCount).toBe(0);
    expect(core.hasKey(keyId)).toBe(false);
    expect(await codeOf(() => core.generateDataKey({ keyId }))).toBe('Forbidden.KeyNotFound');
    expect((await core.createKey({ keyId })).keyId).toBe(keyId);
    expect(core.generateDataKeyWithoutPlaintext({ keyId }).keyId).toBe(keyId);
  });

  test('a rotation: no new version is used or listed; the next rotation makes exactly one', async () => {
    const { core, store } = await failing();
    const { keyId, primaryKeyVersion: first } = await core.createKey({});
    await whenTheStoreFails(store, () => core.createKeyVersion(keyId, 'token-1'));
    expect(core.describeKey(keyId).primaryKeyVersion).toBe(first);
    expect(core.listKeyVersions(keyId, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(1);
    // A data key is never sealed under a version the store does not hold.
    expect(
      core.advanceGenerateDataKeyWithoutPlaintext({ keyId, numberOfBytes: 32 }).keyVersionId,
    ).toBe(first);
    const second = await core.createKeyVersion(keyId, 'token-1');
    expect(second.keyVersionId).not.toBe(first);
    expect(core.describeKey(keyId).primaryKeyVersion).toBe(second.keyVersionId);
    expect(core.listKeyVersions(keyId, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(2);
  });

  test('key states, rotation policy and deletion: unchanged until saved', async () => {
    const { core, store } = await failing();
    const { keyId } = await core.createKey({});
    const blob = core.generateDataKeyWithoutPlaintext({ keyId }).ciphertextBlob;
    await whenTheStoreFails(store, () => core.disableKey(keyId));
    expect(core.describeKey(keyId).keyState).toBe('Enabled');
    expect(core.decrypt({ ciphertextBlob: blob }).keyId).toBe(keyId);
    await whenTheStoreFails(store, () => core.scheduleKeyDeletion(keyId, 7));
    expect(core.describeKey(keyId).keyState).toBe('Enabled');
    expect(core.describeKey(keyId).deleteDate).toBeUndefined();
    await whenTheStoreFails(store, () => core.updateRotationPolicy(keyId, true, '30d'));
    expect(core.describeKey(keyId).automaticRotation).toBe('Disabled');

    await core.disableKey(keyId);
    expect(await codeOf(() => core.decrypt({ ciphertextBlob: blob }))).toBe('Rejected.Disabled');
    await core.enableKey(keyId);
    await core.updateRotationPolicy(keyId, true, '30d');
    expect(core.describeKey(keyId).automaticRotation).toBe('Enabled');
    await core.scheduleKeyDeletion(keyId, 7);
    expect(core.describeKey(keyId).keyState).toBe('PendingDeletion');
  });

  test('aliases: not created, not moved, not deleted until saved', async () => {
    const { core, store } = await failing();
    const a = (await core.createKey({})).keyId;
    const b = (await core.createKey({})).keyId;
    await whenTheStoreFails(store, () => core.createAlias('alias/orders', a));
    expect(await codeOf(() => core.describeKey('alias/orders'))).toBe('Forbidden.AliasNotFound');
    await core.createAlias('alias/orders', a);
    await whenTheStoreFails(store, () => core.updateAlias('alias/orders', b));
    expect(core.describeKey('alias/orders').keyId).toBe(a);
    await whenTheStoreFails(store, () => core.deleteAlias('alias/orders'));
    expect(core.describeKey('alias/orders').keyId).toBe(a);
    await core.updateAlias('alias/orders', b);
    expect(core.describeKey('alias/orders').keyId).toBe(b);
    await core.deleteAlias('alias/orders');
    expect(await codeOf(() => core.describeKey('alias/orders'))).toBe('Forbidden.AliasNotFound');
  });

  test('maintenance: a deletion or rotation that fails to save happens on the next run', async () => {
    const { core, store, clock } = await failing();
    const doomed = (await core.createKey({})).keyId;
    await core.createAlias('alias/doomed', doomed);
    await core.scheduleKeyDeletion(doomed, 7);
    clock.advance(7 * DAY_MS);
    await whenTheStoreFails(store, () => core.runMaintenance());
    // The first write (the alias) failed: the key and its alias are still there.
    expect(core.describeKey(doomed).keyState).toBe('PendingDeletion');
    expect(core.describeKey('alias/doomed').keyId).toBe(doomed);
    expect((await core.runMaintenance()).deleted).toEqual([doomed]);
    expect(await codeOf(() => core.describeKey(doomed))).toBe('Forbidden.KeyNotFound');

    const rotating = (await core.createKey({ enableAutomaticRotation: true })).keyId;
    clock.advance(366 * DAY_MS);
    await whenTheStoreFails(store, () => core.runMaintenance());
    expect(core.listKeyVersions(rotating, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(1);
    expect((await core.runMaintenance()).rotated).toEqual([rotating]);
    expect(core.listKeyVersions(rotating, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(2);
  });

  test('the KMS instance: not created until saved; created by the next call', async () => {
    const { core, store } = await failing();
    await whenTheStoreFails(store, () => core.ensureInstance());
    expect(core.instance).toBeUndefined();
    const instance = await core.ensureInstance();
    expect(core.instance?.id).toBe(instance.id);
  });

  test('after a series of failures, a second core over the same store sees what the first shows', async () => {
    const { core, store, rootKey, clock } = await failing();
    const keyIds: string[] = [];
    for (let i = 0; i < 4; i++) keyIds.push((await core.createKey({})).keyId);
    const attempts: (() => Promise<unknown>)[] = [
      () => core.createKey({}),
      () => core.createKeyVersion(keyIds[0]),
      () => core.disableKey(keyIds[1]),
      () => core.createAlias('alias/first', keyIds[2]),
      () => core.scheduleKeyDeletion(keyIds[3], 7),
    ];
    for (const attempt of attempts) {
      await whenTheStoreFails(store, attempt);
      await attempt(); // the same change, now saved
    }
    const second = await KmsCore.open({ store, rootKey, clock });
    expect(view(second)).toEqual(view(core));
    expect(view(core).keys).toHaveLength(5);
  });

  test('a write that landed but whose answer was lost shows after a reload, and writes go on', async () => {
    const { core, store } = await failing();
    const { keyId, primaryKeyVersion: first } = await core.createKey({});
    store.landFirst = true;
    await whenTheStoreFails(store, () => core.createKeyVersion(keyId, 'token-1'));
    // Not acknowledged: not used.
    expect(core.describeKey(keyId).primaryKeyVersion).toBe(first);
    await core.reload();
    const landed = core.describeKey(keyId).primaryKeyVersion;
    expect(landed).not.toBe(first);
    // The retried rotation finds the version its token made: exactly one rotation.
    expect((await core.createKeyVersion(keyId, 'token-1')).keyVersionId).toBe(landed);
    expect(core.listKeyVersions(keyId, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(2);
    await core.createAlias('alias/after', keyId);
    expect(core.describeKey('alias/after').keyId).toBe(keyId);
  });
});

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, promises as fs, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { processStart } from '../../src/common/process';
import {
  FileKeyStore,
  KeyStoreError,
  KmsCore,
  RootKey,
  loadOrCreateRootKey,
  rootKeyFile,
} from '../../src/kms';

const DIST_KMS = path.resolve(__dirname, '../../dist/kms/index.js');
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'datakey-store-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function openFileCore(folder = dir) {
  const store = await FileKeyStore.open(folder);
  const rootKey = new RootKey(
    await loadOrCreateRootKey(rootKeyFile(path.join(folder, 'root.key')), store),
  );
  return KmsCore.open({ store, rootKey });
}

test('keys, versions and aliases survive a reopen; old blobs still decrypt', async () => {
  const core = await openFileCore();
  const { keyId } = await core.createKey({ description: 'payments' });
  const blob = core.generateDataKey({ keyId, encryptionContext: { a: 'b' } });
  const v2 = await core.createKeyVersion(keyId);
  await core.createAlias('alias/payments', keyId);
  await core.disableKey(keyId);
  await core.enableKey(keyId);
  await core.close();

  const reopened = await openFileCore();
  const meta = reopened.describeKey('alias/payments');
  expect(meta).toMatchObject({
    keyId,
    description: 'payments',
    primaryKeyVersion: v2.keyVersionId,
  });
  const opened = reopened.decrypt({
    ciphertextBlob: blob.ciphertextBlob,
    encryptionContext: { a: 'b' },
  });
  expect(opened.plaintext.equals(blob.plaintext)).toBe(true);
  await reopened.close();
});

test('the store holds no key material in the clear and the root key file is 0600', async () => {
  const core = await openFileCore();
  const { keyId } = await core.createKey({});
  await core.close();
  expect(statSync(path.join(dir, 'root.key')).mode & 0o777).toBe(0o600);
  const files = await fs.readdir(path.join(dir, 'keys'));
  const record = JSON.parse(await fs.readFile(path.join(dir, 'keys', files[0]), 'utf8'));
  expect(record.keyId).toBe(keyId);
  expect(Object.keys(record.versions[0]).sort()).toEqual([
    'creationDate',
    'keyVersionId',
    'wrappedMaterial',
  ]);
  // 12-byte IV + 32-byte material + 16-byte tag: wrapped, never raw.
  expect(Buffer.from(record.versions[0].wrappedMaterial, 'base64')).toHaveLength(60);
});

test('a different root key cannot open the store, and the error says why', async () => {
  const core = await openFileCore();
  await core.createKey({});
  await core.close();
  const store = await FileKeyStore.open(dir);
  await expect(KmsCore.open({ store, rootKey: new RootKey(randomBytes(32)) })).rejects.toThrow(
    /wrong root key or altered record/,
  );
  await store.close();
});

test('a root key readable by others, or of the wrong size, is refused', async () => {
  const file = path.join(dir, 'loose.key');
  writeFileSync(file, randomBytes(32), { mode: 0o644 });
  await expect(rootKeyFile(file).read()).rejects.toThrow(/chmod 600/);
  writeFileSync(path.join(dir, 'short.key'), randomBytes(16), { mode: 0o600 });
  await expect(rootKeyFile(path.join(dir, 'short.key')).read()).rejects.toThrow(/32 bytes/);
});

test('a missing root key beside stored keys is refused, never created anew; put back, it opens', async () => {
  const core = await openFileCore();
  const { keyId } = await core.createKey({});
  const sealed = core.generateDataKey({ keyId });
  await core.close();
  const file = path.join(dir, 'root.key');
  const backup = await fs.readFile(file);
  await fs.rm(file);

  const store = await FileKeyStore.open(dir);
  const err = await loadOrCreateRootKey(rootKeyFile(file), store).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(KeyStoreError);
  expect((err as Error).message).toMatch(
    new RegExp(`root key file ${file} is missing while the key store holds 1 keys`),
  );
  await expect(fs.stat(file)).rejects.toThrow(/ENOENT/);
  await store.close();

  writeFileSync(file, backup, { mode: 0o600 });
  const restored = await openFileCore();
  expect(restored.decrypt({ ciphertextBlob: sealed.ciphertextBlob }).plaintext).toEqual(
    sealed.plaintext,
  );
  sealed.plaintext.fill(0);
  await restored.close();
});

test('an empty store gets a new root key once; later reads return the same one', async () => {
  const store = await FileKeyStore.open(dir);
  const file = path.join(dir, 'root.key');
  const first = await loadOrCreateRootKey(rootKeyFile(file), store);
  const again = await loadOrCreateRootKey(rootKeyFile(file), store);
  expect(again.equals(first)).toBe(true);
  expect(statSync(file).mode & 0o777).toBe(0o600);
  await store.close();
});

test('a live process holds the data folder; a dead one does not', async () => {
  const store = await FileKeyStore.open(dir);
  writeFileSync(path.join(dir, 'lock'), String(process.ppid));
  await expect(FileKeyStore.open(dir)).rejects.toThrow(/in use by process/);
  writeFileSync(path.join(dir, 'lock'), '999999999');
  const second = await FileKeyStore.open(dir);
  await second.close();
  await store.close();
});

test('the lock names its holder by pid AND start time, so a reused pid is not taken for it', async () => {
  const store = await FileKeyStore.open(dir);
  const lock = path.join(dir, 'lock');
  const written = JSON.parse(await fs.readFile(lock, 'utf8')) as { pid: number; started: number };
  expect(written).toEqual({ pid: process.pid, started: processStart(process.pid) });
  // The live parent process with its real start time holds the folder...
  const parent = { pid: process.ppid, started: processStart(process.ppid) };
  writeFileSync(lock, JSON.stringify(parent));
  await expect(FileKeyStore.open(dir)).rejects.toThrow(`in use by process ${process.ppid}`);
  // ...but the same live pid with another start time is a reused pid: a stale lock.
  writeFileSync(lock, JSON.stringify({ ...parent, started: (parent.started ?? 0) + 1 }));
  const second = await FileKeyStore.open(dir);
  expect(JSON.parse(await fs.readFile(lock, 'utf8'))).toEqual(written);
  await second.close();
  await store.close();
});

test('leftover temporary files from a killed write are ignored and removed', async () => {
  const core = await openFileCore();
  await core.createKey({});
  await core.close();
  const torn = path.join(dir, 'keys', 'abc.json.123456.tmp');
  writeFileSync(torn, '{"keyId": "half');
  const reopened = await openFileCore();
  expect(reopened.listKeys({ pageNumber: 1, pageSize: 10 }).totalCount).toBe(1);
  await expect(fs.stat(torn)).rejects.toThrow();
  await reopened.close();
});

/**
 * A child process creates keys, versions and aliases as fast as it can and prints
 * each acknowledged one; it is killed with SIGKILL mid-stream. Every acknowledged
 * write must be there after reopening, and the store must load.
 */
test('kill -9 during writes loses nothing acknowledged and leaves a loadable store', async () => {
  const script = `
    const path = require('path');
    const { FileKeyStore, KmsCore, RootKey, loadOrCreateRootKey, rootKeyFile } = require(${JSON.stringify(DIST_KMS)});
    (async () => {
      const dir = process.argv[1];
      const store = await FileKeyStore.open(dir);
      const core = await KmsCore.open({ store, rootKey: new RootKey(await loadOrCreateRootKey(rootKeyFile(path.join(dir, 'root.key')), store)) });
      for (let i = 0; ; i++) {
        const { keyId } = await core.createKey({ description: 'k' + i });
        const blob = core.generateDataKeyWithoutPlaintext({ keyId }).ciphertextBlob.toString('base64');
        process.stdout.write('key ' + keyId + ' ' + blob + '\\n');
        const v = await core.createKeyVersion(keyId);
        process.stdout.write('version ' + keyId + ' ' + v.keyVersionId + '\\n');
        await core.createAlias('alias/k' + i, keyId);
        process.stdout.write('alias alias/k' + i + ' ' + keyId + '\\n');
      }
    })();`;
  const child = spawn(process.execPath, ['-e', script, dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => (output += chunk));
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (output.split('\n').length > 120) {
        clearInterval(check);
        child.kill('SIGKILL');
        resolve();
      }
    }, 5);
  });
  await new Promise((resolve) => child.once('exit', resolve));

  // Only whole lines were acknowledged: the text after the last newline may be cut.
  const complete = output.split('\n').slice(0, -1);
  expect(complete.length).toBeGreaterThan(100);

  const core = await openFileCore();
  for (const line of complete) {
    const [kind, a, b] = line.split(' ');
    if (kind === 'key') {
      expect(core.decrypt({ ciphertextBlob: Buffer.from(b, 'base64') }).keyId).toBe(a);
    } else if (kind === 'version') {
      expect(core.describeKeyVersion(a, b).keyVersionId).toBe(b);
    } else {
      expect(core.describeKey(a).keyId).toBe(b);
    }
  }
  await core.close();
}, 60_000);

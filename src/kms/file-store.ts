import { randomBytes } from 'node:crypto';
import { promises as fs, constants as fsConstants } from 'node:fs';
import * as path from 'node:path';
import { pidAlive, processStart } from '../common/process';
import type { StoredAlias, StoredKey } from './model';
import { ROOT_KEY_BYTES, type RootKeyLocation } from './root-key';
import type { StoredInstance } from './instance';
import type { KeyStore, StoreContents } from './store';

/**
 * One JSON file per key and per alias, and `instance.json` for the KMS instance. A write goes to a temporary file that is
 * fsynced, renamed over the record and followed by an fsync of the folder, so a
 * `kill -9` at any instant leaves either the old or the new record, never a torn one.
 */
const INSTANCE_FILE = 'instance.json';

export class FileKeyStore implements KeyStore {
  private constructor(
    private readonly dir: string,
    private readonly lockPath: string,
  ) {}

  /** Opens (creating if needed) a data folder and takes its lock. */
  static async open(dir: string): Promise<FileKeyStore> {
    const root = path.resolve(dir);
    await fs.mkdir(path.join(root, 'keys'), { recursive: true, mode: 0o700 });
    await fs.mkdir(path.join(root, 'aliases'), { recursive: true, mode: 0o700 });
    const lockPath = path.join(root, 'lock');
    await takeLock(lockPath);
    return new FileKeyStore(root, lockPath);
  }

  async load(): Promise<StoreContents> {
    return {
      keys: await this.readRecords<StoredKey>('keys'),
      aliases: await this.readRecords<StoredAlias>('aliases'),
      instance: await this.readInstance(),
    };
  }

  /** One process owns the folder (the lock), so `create` needs no extra check. */
  putInstance(instance: StoredInstance): Promise<void> {
    return writeDurably(path.join(this.dir, INSTANCE_FILE), JSON.stringify(instance));
  }

  private async readInstance(): Promise<StoredInstance | undefined> {
    const file = path.join(this.dir, INSTANCE_FILE);
    for (const name of await fs.readdir(this.dir)) {
      // Left by a write killed before its rename: never acknowledged.
      if (name.startsWith(`${INSTANCE_FILE}.`) && name.endsWith('.tmp')) {
        await fs.rm(path.join(this.dir, name), { force: true });
      }
    }
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return JSON.parse(text) as StoredInstance;
    } catch (err) {
      throw new Error(`key store record ${file} is unreadable: ${(err as Error).message}`);
    }
  }

  putKey(key: StoredKey): Promise<void> {
    return writeDurably(this.recordPath('keys', key.keyId), JSON.stringify(key));
  }
  deleteKey(keyId: string): Promise<void> {
    return removeDurably(this.recordPath('keys', keyId));
  }
  putAlias(alias: StoredAlias): Promise<void> {
    return writeDurably(this.recordPath('aliases', alias.aliasName), JSON.stringify(alias));
  }
  deleteAlias(aliasName: string): Promise<void> {
    return removeDurably(this.recordPath('aliases', aliasName));
  }

  async close(): Promise<void> {
    await fs.rm(this.lockPath, { force: true });
  }

  private recordPath(kind: 'keys' | 'aliases', name: string): string {
    return path.join(this.dir, kind, `${Buffer.from(name, 'utf8').toString('base64url')}.json`);
  }

  private async readRecords<T>(kind: 'keys' | 'aliases'): Promise<T[]> {
    const folder = path.join(this.dir, kind);
    const records: T[] = [];
    for (const name of (await fs.readdir(folder)).sort()) {
      const file = path.join(folder, name);
      if (name.endsWith('.tmp')) {
        // Left by a write that was killed before its rename: never acknowledged.
        await fs.rm(file, { force: true });
        continue;
      }
      if (!name.endsWith('.json')) continue;
      try {
        records.push(JSON.parse(await fs.readFile(file, 'utf8')) as T);
      } catch (err) {
        throw new Error(`key store record ${file} is unreadable: ${(err as Error).message}`);
      }
    }
    return records;
  }
}

export async function writeDurably(file: string, content: string | Buffer, mode = 0o600) {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await fs.open(tmp, 'wx', mode);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
  await syncFolder(path.dirname(file));
}

async function removeDurably(file: string): Promise<void> {
  await fs.rm(file, { force: true });
  await syncFolder(path.dirname(file));
}

async function syncFolder(folder: string): Promise<void> {
  const handle = await fs.open(folder, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Who holds a data folder: a pid and that process's start time (guards against pid reuse). */
interface LockHolder {
  pid: number;
  started?: number;
}

async function takeLock(lockPath: string): Promise<void> {
  const me = JSON.stringify({ pid: process.pid, started: processStart(process.pid) });
  try {
    await fs.writeFile(lockPath, me, { flag: 'wx', mode: 0o600 });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const holder = parseLock(await fs.readFile(lockPath, 'utf8').catch(() => ''));
  if (holder && holder.pid !== process.pid && holderAlive(holder)) {
    throw new Error(`data folder ${path.dirname(lockPath)} is in use by process ${holder.pid}`);
  }
  // The previous holder died without releasing the lock (e.g. kill -9), or its
  // pid now names another process (a container restart): take it over.
  await writeDurably(lockPath, me);
}

/** `{"pid":N,"started":T}`, or a bare pid as written by earlier versions. */
function parseLock(text: string): LockHolder | undefined {
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'number') return { pid: parsed };
    const o = parsed as Partial<LockHolder> | null;
    if (o && Number.isSafeInteger(o.pid) && (o.pid as number) > 0) {
      return {
        pid: o.pid as number,
        started: typeof o.started === 'number' ? o.started : undefined,
      };
    }
  } catch {
    // unreadable: nobody can be proven to hold it
  }
  return undefined;
}

function holderAlive(holder: LockHolder): boolean {
  if (holder.started === undefined) return pidAlive(holder.pid);
  const started = processStart(holder.pid);
  return started === undefined ? false : started === holder.started;
}

/**
 * The root key in `file` (mode 0600). A file that others can read is refused,
 * because it unlocks every master key.
 */
export function rootKeyFile(file: string): RootKeyLocation {
  return {
    description: `root key file ${file}`,
    async read() {
      try {
        const stat = await fs.stat(file);
        if ((stat.mode & 0o077) !== 0) {
          throw new Error(
            `root key file ${file} must not be accessible to group or others (chmod 600)`,
          );
        }
        const material = await fs.readFile(file);
        if (material.length !== ROOT_KEY_BYTES) {
          material.fill(0);
          throw new Error(`root key file ${file} must hold exactly ${ROOT_KEY_BYTES} bytes`);
        }
        return material;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        return undefined;
      }
    },
    async create(material) {
      await writeDurably(file, material, 0o600);
      return material;
    },
  };
}

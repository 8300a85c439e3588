import { randomBytes } from 'node:crypto';
import { promises as fs, constants as fsConstants } from 'node:fs';
import * as path from 'node:path';
import type { StoredAlias, StoredKey } from './model';
import { ROOT_KEY_BYTES, type RootKeyLocation } from './root-key';
import type { KeyStore } from './store';

/**
 * One JSON file per key and per alias. A write goes to a temporary file that is
 * fsynced, renamed over the record and followed by an fsync of the folder, so a
 * `kill -9` at any instant leaves either the old or the new record, never a torn one.
 */
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

  async load(): Promise<{ keys: StoredKey[]; aliases: StoredAlias[] }> {
    return {
      keys: await this.readRecords<StoredKey>('keys'),
      aliases: await this.readRecords<StoredAlias>('aliases'),
    };
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

async function takeLock(lockPath: string): Promise<void> {
  try {
    await fs.writeFile(lockPath, String(process.pid), { flag: 'wx', mode: 0o600 });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const owner = Number((await fs.readFile(lockPath, 'utf8').catch(() => '')).trim());
  if (owner && owner !== process.pid && isAlive(owner)) {
    throw new Error(`data folder ${path.dirname(lockPath)} is in use by process ${owner}`);
  }
  // The previous owner died without releasing the lock (e.g. kill -9): take it over.
  await writeDurably(lockPath, String(process.pid));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
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

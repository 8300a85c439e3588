import type { StoredInstance } from './instance';
import type { StoredAlias, StoredKey } from './model';

/**
 * Where the core persists keys and aliases. Every mutation is one record write,
 * acknowledged only once it is durable. Stores never see unwrapped key material.
 */
export interface StoreContents {
  keys: StoredKey[];
  aliases: StoredAlias[];
  instance?: StoredInstance;
}

export interface KeyStore {
  load(): Promise<StoreContents>;
  putKey(key: StoredKey): Promise<void>;
  deleteKey(keyId: string): Promise<void>;
  putAlias(alias: StoredAlias): Promise<void>;
  deleteAlias(aliasName: string): Promise<void>;
  /** The one KMS instance record; `create` fails when another writer created one first. */
  putInstance(instance: StoredInstance, create: boolean): Promise<void>;
  close(): Promise<void>;
}

export class MemoryKeyStore implements KeyStore {
  private readonly keys = new Map<string, StoredKey>();
  private readonly aliases = new Map<string, StoredAlias>();
  private instance?: StoredInstance;

  async load(): Promise<StoreContents> {
    return {
      keys: [...this.keys.values()].map((k) => structuredClone(k)),
      aliases: [...this.aliases.values()].map((a) => structuredClone(a)),
      instance: structuredClone(this.instance),
    };
  }
  async putInstance(instance: StoredInstance, create: boolean): Promise<void> {
    if (create && this.instance) throw new Error('a KMS instance exists already');
    this.instance = structuredClone(instance);
  }
  async putKey(key: StoredKey): Promise<void> {
    this.keys.set(key.keyId, structuredClone(key));
  }
  async deleteKey(keyId: string): Promise<void> {
    this.keys.delete(keyId);
  }
  async putAlias(alias: StoredAlias): Promise<void> {
    this.aliases.set(alias.aliasName, structuredClone(alias));
  }
  async deleteAlias(aliasName: string): Promise<void> {
    this.aliases.delete(aliasName);
  }
  async close(): Promise<void> {}
}

/**
 * The persisted state cannot be used as it is (a record unreadable or altered, the
 * root key missing): the message names what is wrong. Nothing is overwritten or
 * created to get past it; the state has to be put back.
 */
export class KeyStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyStoreError';
  }
}

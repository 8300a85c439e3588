import type { KeyObject } from 'node:crypto';
import { open, sealInto, sealedLength, toSecretKey, zero } from './crypto';

export const ROOT_KEY_BYTES = 32;

/**
 * The root key wraps every master-key version's material before it reaches a store.
 * The wrap is bound to the key and version ids, so wrapped material cannot be moved
 * between records.
 */
export class RootKey {
  private readonly key: KeyObject;

  /** Takes ownership of `material` (32 bytes) and zeroes it. */
  constructor(material: Buffer) {
    if (material.length !== ROOT_KEY_BYTES) {
      zero(material);
      throw new Error(`root key must be ${ROOT_KEY_BYTES} bytes`);
    }
    this.key = toSecretKey(material);
  }

  wrap(material: Buffer, keyId: string, keyVersionId: string): string {
    const out = Buffer.alloc(sealedLength(material.length));
    sealInto(this.key, material, [bindingOf(keyId, keyVersionId)], out, 0);
    return out.toString('base64');
  }

  /** Returns the material; the caller zeroes it. Throws when the record was altered. */
  unwrap(wrapped: string, keyId: string, keyVersionId: string): Buffer {
    const material = open(this.key, Buffer.from(wrapped, 'base64'), [
      bindingOf(keyId, keyVersionId),
    ]);
    if (!material) {
      throw new Error(
        `key version ${keyVersionId} of key ${keyId} cannot be unwrapped: wrong root key or altered record`,
      );
    }
    return material;
  }
}

const bindingOf = (keyId: string, keyVersionId: string): Buffer =>
  Buffer.from(`datakey-operator/root-wrap/v1|${keyId}|${keyVersionId}`, 'utf8');

/** Where a root key is kept (a file, a Secret): read it, or create it once. */
export interface RootKeyLocation {
  /** Names it in messages, e.g. `Secret datakey-system/datakey-root-key`. */
  readonly description: string;
  /** The 32 bytes, or undefined when nothing is stored there. */
  read(): Promise<Buffer | undefined>;
  /** Stores new material; returns the material in force (another writer may have won). */
  create(material: Buffer): Promise<Buffer>;
}

import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  randomBytes,
  randomFillSync,
  type KeyObject,
} from 'node:crypto';

/** AES-GCM primitives of the core. Only the CSPRNG produces keys and IVs. */

export const IV_BYTES = 12;
export const TAG_BYTES = 16;

const GCM_BY_KEY_BYTES: Record<number, 'aes-128-gcm' | 'aes-192-gcm' | 'aes-256-gcm'> = {
  16: 'aes-128-gcm',
  24: 'aes-192-gcm',
  32: 'aes-256-gcm',
};

export function gcmAlgorithm(key: KeyObject): 'aes-128-gcm' | 'aes-192-gcm' | 'aes-256-gcm' {
  const algorithm = GCM_BY_KEY_BYTES[key.symmetricKeySize ?? 0];
  if (!algorithm) throw new Error('unsupported AES key size');
  return algorithm;
}

/** Wraps raw bytes into a KeyObject and zeroes the source buffer. */
export function toSecretKey(material: Buffer): KeyObject {
  try {
    return createSecretKey(material);
  } finally {
    material.fill(0);
  }
}

export function zero(...buffers: (Buffer | undefined)[]): void {
  for (const buffer of buffers) buffer?.fill(0);
}

export function randomKeyBytes(count: number): Buffer {
  return randomBytes(count);
}

/**
 * Seals `plaintext` into `out` at `offset` as iv | ciphertext | tag and returns the IV.
 * Writing in place lets callers build a whole blob with a single allocation.
 */
export function sealInto(
  key: KeyObject,
  plaintext: Buffer,
  aadParts: Buffer[],
  out: Buffer,
  offset: number,
): Buffer {
  const iv = out.subarray(offset, offset + IV_BYTES);
  randomFillSync(iv);
  const cipher = createCipheriv(gcmAlgorithm(key), key, iv);
  for (const part of aadParts) if (part.length > 0) cipher.setAAD(part);
  let written = offset + IV_BYTES;
  written += cipher.update(plaintext).copy(out, written);
  written += cipher.final().copy(out, written);
  cipher.getAuthTag().copy(out, written);
  return iv;
}

/** Opens iv | ciphertext | tag; returns undefined on any authentication failure. */
export function open(key: KeyObject, sealed: Buffer, aadParts: Buffer[]): Buffer | undefined {
  if (sealed.length < IV_BYTES + TAG_BYTES) return undefined;
  const iv = sealed.subarray(0, IV_BYTES);
  const tag = sealed.subarray(sealed.length - TAG_BYTES);
  const body = sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES);
  let plaintext: Buffer | undefined;
  try {
    const decipher = createDecipheriv(gcmAlgorithm(key), key, iv);
    decipher.setAuthTag(tag);
    for (const part of aadParts) if (part.length > 0) decipher.setAAD(part);
    plaintext = decipher.update(body);
    const rest = decipher.final();
    if (rest.length === 0) return plaintext;
    const whole = Buffer.concat([plaintext, rest]);
    zero(plaintext, rest);
    return whole;
  } catch {
    zero(plaintext);
    return undefined;
  }
}

export function sealedLength(plaintextBytes: number): number {
  return IV_BYTES + plaintextBytes + TAG_BYTES;
}

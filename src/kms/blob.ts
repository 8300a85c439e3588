import type { KeyObject } from 'node:crypto';
import { IV_BYTES, TAG_BYTES, open, sealInto, sealedLength } from './crypto';
import { UUID } from './validate';

/**
 * CiphertextBlob layout (docs/ciphertext-format.md):
 *
 *   keyVersionId (36 ASCII) | format (1) | iv (12) | ciphertext (n) | GCM tag (16)
 *
 * The first 37 bytes are the header; they are authenticated together with the
 * EncryptionContext (Standard) or the Aad (Advance), so no byte can be changed or
 * moved to another version without the open failing.
 */

export const VERSION_ID_CHARS = 36;
export const HEADER_BYTES = VERSION_ID_CHARS + 1;

/** Bytes of the blob that seals `plaintextBytes`: header, IV, ciphertext and tag. */
export const blobLength = (plaintextBytes: number) => HEADER_BYTES + sealedLength(plaintextBytes);

export enum BlobFormat {
  /** Standard flow: GenerateDataKey, Encrypt, ReEncrypt; AAD = canonical EncryptionContext. */
  Standard = 0x01,
  /** Advance flow: AdvanceGenerateDataKey, AdvanceEncrypt; AAD = caller's Aad. AES_GCM. */
  Advance = 0x02,
}

export interface ParsedBlob {
  keyVersionId: string;
  format: BlobFormat;
  header: Buffer;
  sealed: Buffer;
}

export function sealBlob(
  key: KeyObject,
  keyVersionId: string,
  format: BlobFormat,
  plaintext: Buffer,
  aad: Buffer,
): { blob: Buffer; iv: Buffer } {
  const blob = Buffer.allocUnsafe(blobLength(plaintext.length));
  blob.write(keyVersionId, 0, VERSION_ID_CHARS, 'latin1');
  blob[VERSION_ID_CHARS] = format;
  const header = blob.subarray(0, HEADER_BYTES);
  const iv = sealInto(key, plaintext, [header, aad], blob, HEADER_BYTES);
  return { blob, iv: Buffer.from(iv) };
}

/** Returns undefined when the bytes are not a blob of this format family. */
export function parseBlob(blob: Buffer): ParsedBlob | undefined {
  if (blob.length < HEADER_BYTES + IV_BYTES + 1 + TAG_BYTES) return undefined;
  const keyVersionId = blob.toString('latin1', 0, VERSION_ID_CHARS);
  const format = blob[VERSION_ID_CHARS];
  if (
    !UUID.test(keyVersionId) ||
    (format !== BlobFormat.Standard && format !== BlobFormat.Advance)
  ) {
    return undefined;
  }
  return {
    keyVersionId,
    format,
    header: blob.subarray(0, HEADER_BYTES),
    sealed: blob.subarray(HEADER_BYTES),
  };
}

export function openBlob(key: KeyObject, parsed: ParsedBlob, aad: Buffer): Buffer | undefined {
  return open(key, parsed.sealed, [parsed.header, aad]);
}

export const ivOf = (parsed: ParsedBlob): Buffer =>
  Buffer.from(parsed.sealed.subarray(0, IV_BYTES));

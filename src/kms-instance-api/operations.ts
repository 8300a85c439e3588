import { KmsCore } from '../kms/core';
import { invalidCiphertext, invalidParameter, missingParameter } from '../kms/errors';
import { MAX_DATA_KEY_BYTES } from '../kms/validate';
import type { OperationName } from './messages';
import type { Message } from './protobuf';

/**
 * What each Instance API operation does with its decoded request, over the
 * core's key-version rules: the Advance operations seal under the primary
 * version with a self-contained blob, GenerateDataKey and Encrypt under the
 * initial version and return the Iv beside the blob.
 */

export interface OperationContext {
  core: KmsCore;
  /** The instance key the request's KeyId names, once the caller may use it. */
  usableKey(req: Message): string;
  /** Refuses unless the caller may use `keyId` (undefined: a key-less call). */
  authorise(keyId: string | undefined): void;
}

type Operation = (req: Message, ctx: OperationContext) => Message;

const AES_GCM = 'AES_GCM';
const DEFAULT_DATA_KEY_BYTES = 32;

const text = (m: Message, name: string) => (m[name] as string | undefined) ?? '';
const bytes = (m: Message, name: string) => {
  const value = m[name] as Buffer | undefined;
  return value && value.length > 0 ? value : undefined;
};

function requiredBytes(m: Message, name: string): Buffer {
  const value = bytes(m, name);
  if (!value) throw missingParameter(name);
  return value;
}

/** proto3 cannot tell 0 from unset: 0 means the default. */
function int(m: Message, name: string, fallback: number): number {
  const value = (m[name] as number | undefined) ?? 0;
  if (value === 0) return fallback;
  if (value < 1 || value > MAX_DATA_KEY_BYTES) {
    throw invalidParameter(name, `It must be 1 to ${MAX_DATA_KEY_BYTES}.`);
  }
  return value;
}

function checkAlgorithm(m: Message): void {
  const algorithm = text(m, 'Algorithm');
  if (algorithm && algorithm !== AES_GCM) {
    throw invalidParameter('Algorithm', 'Symmetric keys use AES_GCM.');
  }
  if (text(m, 'PaddingMode')) {
    throw invalidParameter('PaddingMode', 'AES_GCM takes no padding mode.');
  }
}

function checkNoCallerIv(m: Message): void {
  if (bytes(m, 'Iv')) throw invalidParameter('Iv', 'The server chooses the IV.');
}

const ivOfBlob = (blob: Buffer): Buffer => KmsCore.ivOfBlob(blob) ?? Buffer.alloc(0);

function encrypt(advance: boolean): Operation {
  return (req, { core, usableKey }) => {
    checkAlgorithm(req);
    checkNoCallerIv(req);
    const input = {
      keyId: usableKey(req),
      plaintext: requiredBytes(req, 'Plaintext'),
      aad: bytes(req, 'Aad'),
    };
    const r = advance ? core.advanceEncrypt(input) : core.encrypt(input);
    return {
      KeyId: r.keyId,
      CiphertextBlob: r.ciphertextBlob,
      Iv: ivOfBlob(r.ciphertextBlob),
      Algorithm: AES_GCM,
      KeyVersionId: advance ? r.keyVersionId : undefined,
    };
  };
}

/** The key is the one that sealed the blob; a KeyId or Iv sent along must agree with it. */
function decrypt(advance: boolean): Operation {
  return (req, { core, authorise }) => {
    checkAlgorithm(req);
    const blob = requiredBytes(req, 'CiphertextBlob');
    const key = core.instanceKeyOfBlob(blob);
    const named = text(req, 'KeyId');
    if (named && core.instanceKey(named).keyId !== key.keyId) throw invalidCiphertext();
    const iv = bytes(req, 'Iv');
    if (iv && !iv.equals(ivOfBlob(blob))) throw invalidCiphertext('Iv');
    authorise(key.keyId);
    const input = { ciphertextBlob: blob, aad: bytes(req, 'Aad') };
    const r = advance ? core.advanceDecrypt(input) : core.decrypt(input);
    return {
      KeyId: r.keyId,
      Plaintext: r.plaintext,
      Algorithm: AES_GCM,
      KeyVersionId: advance ? r.keyVersionId : undefined,
    };
  };
}

export const OPERATIONS: Record<OperationName, Operation> = {
  GenerateRandom: (req, { core, authorise }) => {
    authorise(undefined);
    return { Random: core.generateRandom(int(req, 'Length', DEFAULT_DATA_KEY_BYTES)) };
  },
  GenerateDataKey: (req, { core, usableKey }) => {
    checkAlgorithm(req);
    const r = core.generateDataKey({
      keyId: usableKey(req),
      numberOfBytes: int(req, 'NumberOfBytes', DEFAULT_DATA_KEY_BYTES),
      aad: bytes(req, 'Aad'),
    });
    return {
      KeyId: r.keyId,
      Iv: ivOfBlob(r.ciphertextBlob),
      Plaintext: r.plaintext,
      CiphertextBlob: r.ciphertextBlob,
      Algorithm: AES_GCM,
    };
  },
  AdvanceGenerateDataKey: (req, { core, usableKey }) => {
    const r = core.advanceGenerateDataKey({
      keyId: usableKey(req),
      numberOfBytes: int(req, 'NumberOfBytes', DEFAULT_DATA_KEY_BYTES),
      aad: bytes(req, 'Aad'),
    });
    return {
      KeyId: r.keyId,
      Iv: r.iv,
      Plaintext: r.plaintext,
      CiphertextBlob: r.ciphertextBlob,
      Algorithm: r.algorithm,
      KeyVersionId: r.keyVersionId,
    };
  },
  Encrypt: encrypt(false),
  AdvanceEncrypt: encrypt(true),
  Decrypt: decrypt(false),
  AdvanceDecrypt: decrypt(true),
};

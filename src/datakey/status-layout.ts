import type { DataKey, DataKeyStatus } from '../api/types';
import { KmsCore } from '../kms';
import { secretNameOf, type WrappedDataKey } from './wrapped';

/**
 * The status layout: the DataKey's second copy of its (non-secret) ciphertext,
 * so a lost or tampered Secret is restored with the same data key.
 */
export function statusFields(dataKey: DataKey, wrapped: WrappedDataKey): DataKeyStatus {
  return {
    keyId: wrapped.keyId,
    keyVersionId: wrapped.keyVersionId,
    flow: wrapped.flow,
    secretName: secretNameOf(dataKey),
    ciphertextBlob: wrapped.ciphertextBlob.toString('base64'),
  };
}

/** Reads the wrapped key back from status; undefined when incomplete. */
export function wrappedFromStatus(status: DataKeyStatus | undefined): WrappedDataKey | undefined {
  if (!status?.ciphertextBlob || !status.keyId || !status.keyVersionId || !status.flow)
    return undefined;
  const blob = Buffer.from(status.ciphertextBlob, 'base64');
  return {
    keyId: status.keyId,
    keyVersionId: status.keyVersionId,
    flow: status.flow,
    ciphertextBlob: blob,
    // Status keeps only the blob: the Advance flow's IV is read out of it by the core.
    iv: status.flow === 'Advance' ? KmsCore.ivOfBlob(blob) : undefined,
  };
}

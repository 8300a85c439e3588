import type { DataKey, DataKeyStatus } from '../api/types';
import { entryOf, generationsOfEntries, wrappedGeneration } from './generations';
import { currentOf, secretNameOf, type WrappedGeneration } from './wrapped';

/**
 * The status layout: the DataKey's second copy of its (non-secret) ciphertexts,
 * so a lost or tampered Secret is restored with the same generations. The
 * top-level fields describe the current generation.
 */
export function statusFields(
  dataKey: DataKey,
  generations: WrappedGeneration[],
): Pick<
  DataKeyStatus,
  | 'keyId'
  | 'keyVersionId'
  | 'flow'
  | 'secretName'
  | 'ciphertextBlob'
  | 'currentGeneration'
  | 'generations'
  | 'lastRegenerationTime'
> {
  const current = currentOf(generations);
  const fields: ReturnType<typeof statusFields> = {
    keyId: current.keyId,
    keyVersionId: current.keyVersionId,
    flow: current.flow,
    secretName: secretNameOf(dataKey),
    ciphertextBlob: current.ciphertextBlob.toString('base64'),
    currentGeneration: current.generation,
    generations: generations.map(entryOf),
  };
  // No undefined fields: the status writer compares with what is stored.
  if (current.generation > 1) fields.lastRegenerationTime = current.creationTime;
  return fields;
}

/**
 * Reads the generations back from status, sorted ascending; empty when
 * incomplete. A status of the first layout (one ciphertext, no generations)
 * reads as generation 1.
 */
export function generationsFromStatus(
  status: DataKeyStatus | undefined,
  created: string | undefined,
): WrappedGeneration[] {
  if (!status?.keyId) return [];
  if (status.generations) return generationsOfEntries(status.keyId, status.generations);
  if (!status.ciphertextBlob || !status.keyVersionId || !status.flow) return [];
  return [
    wrappedGeneration(
      status.keyId,
      status.keyVersionId,
      status.flow,
      status.ciphertextBlob,
      1,
      created ?? new Date(0).toISOString(),
    ),
  ];
}

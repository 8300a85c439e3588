import type { Flow, GenerationEntry } from '../api/types';
import { KmsCore } from '../kms';
import type { WrappedGeneration } from './wrapped';

/**
 * The one serialization of a generation, shared by the Secret's `generations`
 * JSON and `status.generations`: the same entries in both, so either copy
 * restores the other. The key id is the DataKey's (its MasterKey never changes).
 */
export function entryOf(g: WrappedGeneration): GenerationEntry {
  return {
    generation: g.generation,
    keyVersionId: g.keyVersionId,
    flow: g.flow,
    ciphertextBlob: g.ciphertextBlob.toString('base64'),
    creationTime: g.creationTime,
  };
}

const isFlow = (v: unknown): v is Flow => v === 'Standard' || v === 'Advance';

/** Entries back to generations; malformed entries are left out (they restore nothing). */
export function generationsOfEntries(keyId: string, entries: unknown): WrappedGeneration[] {
  if (!Array.isArray(entries)) return [];
  const out: WrappedGeneration[] = [];
  for (const e of entries as Partial<Record<keyof GenerationEntry, unknown>>[]) {
    if (
      !e ||
      typeof e !== 'object' ||
      !Number.isSafeInteger(e.generation) ||
      (e.generation as number) < 1 ||
      typeof e.keyVersionId !== 'string' ||
      !isFlow(e.flow) ||
      typeof e.ciphertextBlob !== 'string' ||
      typeof e.creationTime !== 'string'
    ) {
      continue;
    }
    out.push(
      wrappedGeneration(
        keyId,
        e.keyVersionId,
        e.flow,
        e.ciphertextBlob,
        e.generation as number,
        e.creationTime,
      ),
    );
  }
  return out.sort((a, b) => a.generation - b.generation);
}

/** A generation from its stored strings; the Advance flow's IV is read out of the blob by the core. */
export function wrappedGeneration(
  keyId: string,
  keyVersionId: string,
  flow: Flow,
  ciphertextBlobBase64: string,
  generation: number,
  creationTime: string,
): WrappedGeneration {
  const ciphertextBlob = Buffer.from(ciphertextBlobBase64, 'base64');
  return {
    keyId,
    keyVersionId,
    flow,
    ciphertextBlob,
    iv: flow === 'Advance' ? KmsCore.ivOfBlob(ciphertextBlob) : undefined,
    generation,
    creationTime,
  };
}

import type { DataKey, Flow } from '../api/types';
import type { KubeObject } from '../runtime/kube-client';

/**
 * One data key as it is stored: the ciphertext and what names its wrapping key.
 * The Secret layout (secret-layout.ts) and the status layout (status-layout.ts)
 * are two serializations of the DataKey's generations of this value.
 */
export interface WrappedDataKey {
  keyId: string;
  keyVersionId: string;
  flow: Flow;
  ciphertextBlob: Buffer;
  /** Advance flow only. */
  iv?: Buffer;
}

/** One generation of a DataKey: a data key of its own, numbered from 1. */
export interface WrappedGeneration extends WrappedDataKey {
  generation: number;
  /** When this generation's data key was generated (RFC 3339). */
  creationTime: string;
}

export type DataKeyObject = DataKey & KubeObject;
export type SecretObject = KubeObject & { data?: Record<string, string>; type?: string };

export function secretNameOf(dataKey: DataKey): string {
  return dataKey.spec.secretName ?? dataKey.metadata.name;
}

/** The current generation: the highest number (generations are kept sorted ascending). */
export function currentOf<T extends { generation: number }>(generations: T[]): T {
  return generations.reduce((a, b) => (b.generation > a.generation ? b : a));
}

import type { DataKey, Flow } from '../api/types';
import type { KubeObject } from '../runtime/kube-client';

/**
 * One data key as it is stored: the ciphertext and what names its wrapping key.
 * The Secret layout (secret-layout.ts) and the status layout (status-layout.ts)
 * are two serializations of this one value.
 */
export interface WrappedDataKey {
  keyId: string;
  keyVersionId: string;
  flow: Flow;
  ciphertextBlob: Buffer;
  /** Advance flow only. */
  iv?: Buffer;
}

export type DataKeyObject = DataKey & KubeObject;
export type SecretObject = KubeObject & { data?: Record<string, string>; type?: string };

export function secretNameOf(dataKey: DataKey): string {
  return dataKey.spec.secretName ?? dataKey.metadata.name;
}

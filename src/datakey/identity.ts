import type { DataKey } from '../api/types';
import { canonicalEncryptionContext } from '../kms';

/**
 * The DataKey's identity binding: every stored ciphertext is bound to the
 * DataKey's namespace and name, so a copy of its Secret elsewhere opens nothing.
 */

export const IDENTITY_NAMESPACE = 'kms.datakey.io/namespace';
export const IDENTITY_NAME = 'kms.datakey.io/name';

/** The user's context plus the identity binding; reserved keys always win. */
export function boundContext(dataKey: DataKey): Record<string, string> {
  return {
    ...(dataKey.spec.encryptionContext ?? {}),
    [IDENTITY_NAMESPACE]: dataKey.metadata.namespace ?? '',
    [IDENTITY_NAME]: dataKey.metadata.name,
  };
}

/** The Advance flow binds the same identity: its Aad is the canonical context. */
export function boundAad(dataKey: DataKey): Buffer {
  return Buffer.from(canonicalEncryptionContext(boundContext(dataKey)), 'utf8');
}

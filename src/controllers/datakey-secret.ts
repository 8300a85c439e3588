import { canonicalEncryptionContext, type KmsCore } from '../kms';
import { LABEL_DATAKEY, SECRET_TYPE, type DataKey, type Flow } from '../api/types';

/**
 * The Secret a DataKey owns: ciphertext and what decryption needs, never a
 * plaintext. The ciphertext is bound to the DataKey's namespace and name.
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

export interface WrappedDataKey {
  keyId: string;
  keyVersionId: string;
  flow: Flow;
  ciphertextBlob: Buffer;
  /** Advance flow only. */
  iv?: Buffer;
}

export function secretNameOf(dataKey: DataKey): string {
  return dataKey.spec.secretName ?? dataKey.metadata.name;
}

/** `data` of the Secret (values base64 as the API expects). */
export function secretData(dataKey: DataKey, wrapped: WrappedDataKey): Record<string, string> {
  const text: Record<string, string> = {
    keyId: wrapped.keyId,
    keyVersionId: wrapped.keyVersionId,
    flow: wrapped.flow,
  };
  const binary: Record<string, Buffer> = { ciphertextBlob: wrapped.ciphertextBlob };
  if (wrapped.flow === 'Standard') {
    text.encryptionContext = canonicalEncryptionContext(boundContext(dataKey));
  } else {
    text.algorithm = 'AES_GCM';
    binary.iv = wrapped.iv ?? Buffer.alloc(0);
    binary.aad = boundAad(dataKey);
  }
  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(text)) data[k] = Buffer.from(v, 'utf8').toString('base64');
  for (const [k, v] of Object.entries(binary)) data[k] = v.toString('base64');
  return data;
}

export function secretManifest(dataKey: DataKey, wrapped: WrappedDataKey) {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: SECRET_TYPE,
    metadata: {
      name: secretNameOf(dataKey),
      namespace: dataKey.metadata.namespace,
      labels: { [LABEL_DATAKEY]: dataKey.metadata.name },
      ownerReferences: [
        {
          apiVersion: 'kms.datakey.io/v1alpha1',
          kind: 'DataKey',
          name: dataKey.metadata.name,
          uid: dataKey.metadata.uid as string,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    data: secretData(dataKey, wrapped),
  };
}

/** Reads the wrapped key back from a Secret's data; undefined when incomplete. */
export function wrappedFromSecret(
  data: Record<string, string> | undefined,
): WrappedDataKey | undefined {
  if (!data?.ciphertextBlob || !data.keyId || !data.keyVersionId || !data.flow) return undefined;
  const text = (k: string) => Buffer.from(data[k], 'base64').toString('utf8');
  const flow = text('flow');
  if (flow !== 'Standard' && flow !== 'Advance') return undefined;
  return {
    keyId: text('keyId'),
    keyVersionId: text('keyVersionId'),
    flow,
    ciphertextBlob: Buffer.from(data.ciphertextBlob, 'base64'),
    iv: data.iv ? Buffer.from(data.iv, 'base64') : undefined,
  };
}

export const decryptOperation = (flow: Flow) =>
  flow === 'Standard' ? 'Decrypt' : 'AdvanceDecrypt';

/** Opens a stored ciphertext inside the core; the caller zeroes the plaintext. */
export function openWrapped(core: KmsCore, dataKey: DataKey, wrapped: WrappedDataKey): Buffer {
  return wrapped.flow === 'Standard'
    ? core.decrypt({
        ciphertextBlob: wrapped.ciphertextBlob,
        encryptionContext: boundContext(dataKey),
      }).plaintext
    : core.advanceDecrypt({ ciphertextBlob: wrapped.ciphertextBlob, aad: boundAad(dataKey) })
        .plaintext;
}

import { API_VERSION, LABEL_DATAKEY, SECRET_TYPE, type DataKey } from '../api/types';
import { canonicalEncryptionContext } from '../kms';
import { boundAad, boundContext } from './identity';
import { secretNameOf, type WrappedDataKey } from './wrapped';

/**
 * The Secret layout: the Secret a DataKey owns holds the ciphertext and what
 * decryption needs (strings the KMS API takes), never a plaintext.
 */

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
          apiVersion: API_VERSION,
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

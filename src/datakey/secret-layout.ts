import {
  API_VERSION,
  LABEL_DATAKEY,
  LABEL_LAYOUT,
  SECRET_LAYOUT,
  SECRET_TYPE,
  type DataKey,
} from '../api/types';
import { canonicalEncryptionContext } from '../kms';
import { entryOf, generationsOfEntries, wrappedGeneration } from './generations';
import { boundAad, boundContext } from './identity';
import { currentOf, secretNameOf, type SecretObject, type WrappedGeneration } from './wrapped';

/**
 * The Secret layout ("2"): the Secret a DataKey owns holds the ciphertexts and
 * what decryption needs, as the strings the KMS API takes (ciphertextBlob, iv and
 * aad base64 text, encryptionContext JSON), so a mounted or env-injected Secret
 * goes to Decrypt / AdvanceDecrypt unchanged; never a plaintext. The top-level
 * keys describe the current generation; `generations` lists every kept one.
 */

/** `data` of the Secret (each value base64-encoded, as the Secret API expects). */
export function secretData(
  dataKey: DataKey,
  generations: WrappedGeneration[],
): Record<string, string> {
  const current = currentOf(generations);
  const text: Record<string, string> = {
    keyId: current.keyId,
    keyVersionId: current.keyVersionId,
    flow: current.flow,
    ciphertextBlob: current.ciphertextBlob.toString('base64'),
    generation: String(current.generation),
    generations: JSON.stringify(generations.map(entryOf)),
  };
  // The decryption inputs every kept generation needs (all share the identity binding).
  if (generations.some((g) => g.flow === 'Standard')) {
    text.encryptionContext = canonicalEncryptionContext(boundContext(dataKey));
  }
  if (generations.some((g) => g.flow === 'Advance')) {
    text.aad = boundAad(dataKey).toString('base64');
  }
  if (current.flow === 'Advance') {
    text.algorithm = 'AES_GCM';
    text.iv = (current.iv ?? Buffer.alloc(0)).toString('base64');
  }
  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(text)) data[k] = Buffer.from(v, 'utf8').toString('base64');
  return data;
}

export function secretManifest(dataKey: DataKey, generations: WrappedGeneration[]) {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: SECRET_TYPE,
    metadata: {
      name: secretNameOf(dataKey),
      namespace: dataKey.metadata.namespace,
      labels: { [LABEL_DATAKEY]: dataKey.metadata.name, [LABEL_LAYOUT]: SECRET_LAYOUT },
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
    data: secretData(dataKey, generations),
  };
}

/**
 * Reads the generations back from a Secret, sorted ascending; empty when
 * incomplete. A Secret of the first layout (raw blob bytes, no `generations`)
 * reads as generation 1, so it is rewritten with the same data key.
 */
export function generationsFromSecret(secret: SecretObject | undefined): WrappedGeneration[] {
  const data = secret?.data;
  if (!data?.ciphertextBlob || !data.keyId || !data.keyVersionId || !data.flow) return [];
  const text = (k: string) => Buffer.from(data[k], 'base64').toString('utf8');
  const keyId = text('keyId');
  if (data.generations) {
    try {
      return generationsOfEntries(keyId, JSON.parse(text('generations')));
    } catch {
      return [];
    }
  }
  const flow = text('flow');
  if (flow !== 'Standard' && flow !== 'Advance') return [];
  const created = secret?.metadata.creationTimestamp ?? new Date(0).toISOString();
  return [wrappedGeneration(keyId, text('keyVersionId'), flow, data.ciphertextBlob, 1, created)];
}

import { timingSafeEqual } from 'node:crypto';
import { secretsPath } from '../api/paths';
import { ROOT_KEY_BYTES, type RootKeyLocation } from '../kms';
import { isConflict, type KubeClient, type KubeObject } from '../runtime/kube-client';
import {
  parseSealedBlob,
  SealError,
  type AliCloudKmsSeal,
  type SealContext,
  type SealedBlob,
} from '../seal/alicloudkms-seal';
import {
  ROOT_KEY_SECRET,
  createRootKeySecretOnce,
  getRootKeySecret,
  rootKeySecretBody,
  type SecretObject,
} from './secret-key-store';

/** The Secret key of the sealed root key; a sealed Secret has no `rootKey`. */
export const SEALED_ROOT_KEY_FIELD = 'sealedRootKey';
export const SEALED_BY_ANNOTATION = 'kms.datakey.io/sealed-by';

/**
 * The context a root key is sealed under: this cluster (the UID of its
 * kube-system namespace, which a restore into another cluster does not carry)
 * and the operator's namespace.
 */
export async function sealContextOf(client: KubeClient, namespace: string): Promise<SealContext> {
  const kubeSystem = await client.get<KubeObject>('/api/v1/namespaces/kube-system');
  return {
    'kms.datakey.io/cluster': String(kubeSystem.metadata.uid),
    'kms.datakey.io/namespace': namespace,
  };
}

export interface SealedRootKeyOptions {
  client: KubeClient;
  namespace: string;
  seal: AliCloudKmsSeal;
  context: SealContext;
  /**
   * The context a restored blob was sealed under (another cluster or namespace):
   * given explicitly, the blob is opened with it and sealed again with this one.
   */
  previousContext?: SealContext;
}

/**
 * The root key in Secret NS/datakey-root-key, sealed by a KMS key: only the
 * blob is stored (`sealedRootKey`), and each read unseals it. A Secret that
 * still holds a plaintext `rootKey` is sealed in place with the same root key
 * (replaced under its resourceVersion, so a concurrent change wins and is read
 * again); nothing it wraps changes.
 */
export function sealedRootKeySecret(options: SealedRootKeyOptions): RootKeyLocation {
  const { client, namespace, seal, context } = options;
  const collection = secretsPath(namespace);
  const description = `Secret ${namespace}/${ROOT_KEY_SECRET}`;
  const body = (blob: SealedBlob, resourceVersion?: string): SecretObject =>
    rootKeySecretBody(
      namespace,
      { [SEALED_ROOT_KEY_FIELD]: Buffer.from(JSON.stringify(blob)).toString('base64') },
      resourceVersion,
      { [SEALED_BY_ANNOTATION]: `alicloudkms:${blob.keyId}` },
    );

  /** Seals and checks that the blob opens to the same key before anything is written. */
  const sealChecked = async (material: Buffer): Promise<SealedBlob> => {
    const blob = await seal.seal(material, context);
    const back = await seal.unseal(blob, context);
    const same = back.length === material.length && timingSafeEqual(back, material);
    back.fill(0);
    if (!same) throw new SealError('SealKmsError', 'the sealed root key did not open to itself');
    return blob;
  };

  const unsealStored = async (secret: SecretObject, blob: SealedBlob): Promise<Buffer> => {
    try {
      return await seal.unseal(blob, context);
    } catch (err) {
      const previous = options.previousContext;
      if (!(err instanceof SealError) || err.reason !== 'SealContextMismatch' || !previous) {
        throw err;
      }
      // The explicit re-seal of a restored key store: open with the old context, seal with ours.
      const material = await seal.unseal(blob, previous);
      const resealed = await sealChecked(material);
      await client.replace(
        `${collection}/${ROOT_KEY_SECRET}`,
        body(resealed, secret.metadata.resourceVersion),
      );
      return material;
    }
  };

  const read = async (): Promise<Buffer | undefined> => {
    const secret = await getRootKeySecret(client, namespace);
    if (!secret) return undefined;
    const sealed = secret.data?.[SEALED_ROOT_KEY_FIELD];
    if (sealed) {
      return unsealStored(secret, parseSealedBlob(Buffer.from(sealed, 'base64').toString('utf8')));
    }
    const material = Buffer.from(secret.data?.rootKey ?? '', 'base64');
    if (material.length !== ROOT_KEY_BYTES) {
      material.fill(0);
      throw new Error(
        `${description} holds neither a sealedRootKey nor a ${ROOT_KEY_BYTES}-byte rootKey`,
      );
    }
    try {
      const blob = await sealChecked(material);
      await client.replace(
        `${collection}/${ROOT_KEY_SECRET}`,
        body(blob, secret.metadata.resourceVersion),
      );
      return material;
    } catch (err) {
      material.fill(0);
      if (!isConflict(err)) throw err;
      return read(); // another replica sealed it first
    }
  };

  return {
    description,
    read,
    create: (material) =>
      createRootKeySecretOnce(
        client,
        async () => body(await sealChecked(material)),
        material,
        read,
        description,
      ),
  };
}

/**
 * Going back to the embedded default: writes the unsealed root key to the
 * Secret's `rootKey` and removes `sealedRootKey` (the operator then runs with
 * no seal). Returns false when the Secret is not sealed.
 */
export async function unsealInPlace(options: SealedRootKeyOptions): Promise<boolean> {
  const { client, namespace } = options;
  const path = `${secretsPath(namespace)}/${ROOT_KEY_SECRET}`;
  const secret = await client.get<SecretObject>(path);
  const sealed = secret.data?.[SEALED_ROOT_KEY_FIELD];
  if (!sealed) return false;
  const blob = parseSealedBlob(Buffer.from(sealed, 'base64').toString('utf8'));
  const material = await options.seal.unseal(blob, options.context);
  try {
    await client.replace(
      path,
      rootKeySecretBody(
        namespace,
        { rootKey: material.toString('base64') },
        secret.metadata.resourceVersion,
      ),
    );
  } finally {
    material.fill(0);
  }
  return true;
}

import { createHash, randomBytes } from 'node:crypto';
import type { KeyStore, StoredAlias, StoredKey } from '../kms';
import { ROOT_KEY_BYTES } from '../kms';
import { isConflict, isNotFound, type KubeClient, type KubeObject } from '../runtime/kube-client';
import { secretsPath } from '../api/paths';

/**
 * KMS key store in Secrets of the operator's namespace: one Secret per key and per
 * alias, so state lives in etcd and replicas share it. Writes carry the last seen
 * resourceVersion (optimistic concurrency); a conflict fails the write instead of
 * overwriting another replica's change.
 */

const STORE_LABEL = 'kms.datakey.io/store';
const RECORD_FIELD = 'record';

interface SecretObject extends KubeObject {
  data?: Record<string, string>;
}

export class SecretKeyStore implements KeyStore {
  private readonly versions = new Map<string, string>();

  constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
  ) {}

  private collection(): string {
    return secretsPath(this.namespace);
  }

  async load(): Promise<{ keys: StoredKey[]; aliases: StoredAlias[] }> {
    const list = await this.client.list<SecretObject>(this.collection(), {
      labelSelector: STORE_LABEL,
    });
    const keys: StoredKey[] = [];
    const aliases: StoredAlias[] = [];
    this.versions.clear();
    for (const secret of list.items) {
      const raw = secret.data?.[RECORD_FIELD];
      if (!raw) continue;
      this.versions.set(secret.metadata.name, secret.metadata.resourceVersion ?? '');
      const record = JSON.parse(Buffer.from(raw, 'base64').toString('utf8'));
      if (secret.metadata.labels?.[STORE_LABEL] === 'key') keys.push(record as StoredKey);
      else if (secret.metadata.labels?.[STORE_LABEL] === 'alias')
        aliases.push(record as StoredAlias);
    }
    return { keys, aliases };
  }

  putKey(key: StoredKey): Promise<void> {
    return this.put(keySecretName(key.keyId), 'key', key);
  }

  deleteKey(keyId: string): Promise<void> {
    return this.remove(keySecretName(keyId));
  }

  putAlias(alias: StoredAlias): Promise<void> {
    return this.put(aliasSecretName(alias.aliasName), 'alias', alias);
  }

  deleteAlias(aliasName: string): Promise<void> {
    return this.remove(aliasSecretName(aliasName));
  }

  async close(): Promise<void> {}

  private async put(name: string, kind: 'key' | 'alias', record: object): Promise<void> {
    const resourceVersion = this.versions.get(name);
    const body = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kms.datakey.io/key-store',
      metadata: {
        name,
        namespace: this.namespace,
        labels: { [STORE_LABEL]: kind },
        resourceVersion,
      },
      data: { [RECORD_FIELD]: Buffer.from(JSON.stringify(record), 'utf8').toString('base64') },
    };
    const saved = resourceVersion
      ? await this.client.replace<SecretObject>(`${this.collection()}/${name}`, body)
      : await this.client.create<SecretObject>(this.collection(), body);
    this.versions.set(name, saved.metadata.resourceVersion ?? '');
  }

  private async remove(name: string): Promise<void> {
    try {
      const resourceVersion = this.versions.get(name);
      await this.client.request('DELETE', `${this.collection()}/${name}`, {
        body: { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { resourceVersion } },
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    this.versions.delete(name);
  }
}

const keySecretName = (keyId: string) => `datakey-kms-key-${keyId}`;
const aliasSecretName = (aliasName: string) =>
  `datakey-kms-alias-${createHash('sha256').update(aliasName).digest('hex').slice(0, 40)}`;

export const ROOT_KEY_SECRET = 'datakey-root-key';

/**
 * Reads the root key from its Secret, creating it on first start. When two
 * replicas race, the create of one fails with a conflict and it reads the winner's.
 */
export async function loadOrCreateRootKeySecret(
  client: KubeClient,
  namespace: string,
): Promise<Buffer> {
  const path = secretsPath(namespace);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const secret = await client.get<SecretObject>(`${path}/${ROOT_KEY_SECRET}`);
      if (secret.data?.sealedRootKey) {
        throw new Error(
          `Secret ${namespace}/${ROOT_KEY_SECRET} is sealed by a KMS key: start the operator with ` +
            'the --seal options it was sealed with (docs/operator.md, "Root of trust")',
        );
      }
      const material = Buffer.from(secret.data?.rootKey ?? '', 'base64');
      if (material.length !== ROOT_KEY_BYTES) {
        material.fill(0);
        throw new Error(
          `Secret ${namespace}/${ROOT_KEY_SECRET} must hold a ${ROOT_KEY_BYTES}-byte rootKey`,
        );
      }
      return material;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const material = randomBytes(ROOT_KEY_BYTES);
    try {
      await client.create(path, {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'kms.datakey.io/root-key',
        metadata: { name: ROOT_KEY_SECRET, namespace },
        data: { rootKey: material.toString('base64') },
      });
      return material;
    } catch (err) {
      material.fill(0);
      if (!isConflict(err)) throw err;
    }
  }
  throw new Error(`could not read or create Secret ${namespace}/${ROOT_KEY_SECRET}`);
}

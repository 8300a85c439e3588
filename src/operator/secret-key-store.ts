import { createHash } from 'node:crypto';
import type {
  KeyStore,
  RootKeyLocation,
  StoreContents,
  StoredAlias,
  StoredInstance,
  StoredKey,
} from '../kms';
import { KeyStoreError, ROOT_KEY_BYTES } from '../kms';
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

export interface SecretObject extends KubeObject {
  type?: string;
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

  async load(): Promise<StoreContents> {
    const list = await this.client.list<SecretObject>(this.collection(), {
      labelSelector: STORE_LABEL,
    });
    const keys: StoredKey[] = [];
    const aliases: StoredAlias[] = [];
    let instance: StoredInstance | undefined;
    this.versions.clear();
    for (const secret of list.items) {
      const raw = secret.data?.[RECORD_FIELD] ?? '';
      const kind = secret.metadata.labels?.[STORE_LABEL];
      if (kind !== 'key' && kind !== 'alias' && kind !== 'instance') continue;
      const record = parseRecord(raw);
      const expected =
        kind === 'key'
          ? keySecretName(String(record?.keyId))
          : kind === 'alias'
            ? aliasSecretName(String(record?.aliasName))
            : INSTANCE_SECRET;
      // A record under another record's name was moved or edited by hand.
      if (!record || expected !== secret.metadata.name) {
        throw new KeyStoreError(
          `key store Secret ${this.namespace}/${secret.metadata.name} holds an unreadable or ` +
            'altered record: restore it from a backup',
        );
      }
      this.versions.set(secret.metadata.name, secret.metadata.resourceVersion ?? '');
      if (kind === 'key') keys.push(record as unknown as StoredKey);
      else if (kind === 'alias') aliases.push(record as unknown as StoredAlias);
      else instance = record as unknown as StoredInstance;
    }
    return { keys, aliases, instance };
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

  /** `create` posts without a resourceVersion: a replica that lost the race gets a conflict. */
  putInstance(instance: StoredInstance, create: boolean): Promise<void> {
    if (create) this.versions.delete(INSTANCE_SECRET);
    return this.put(INSTANCE_SECRET, 'instance', instance);
  }

  async close(): Promise<void> {}

  private async put(
    name: string,
    kind: 'key' | 'alias' | 'instance',
    record: object,
  ): Promise<void> {
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

function parseRecord(raw: string): Record<string, unknown> | undefined {
  try {
    const record: unknown = JSON.parse(Buffer.from(raw, 'base64').toString('utf8'));
    return record && typeof record === 'object' ? (record as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The built-in KMS instance: id, wrapped CA key, network rules, policies, access points, client keys. */
const INSTANCE_SECRET = 'datakey-kms-instance';
const keySecretName = (keyId: string) => `datakey-kms-key-${keyId}`;
const aliasSecretName = (aliasName: string) =>
  `datakey-kms-alias-${createHash('sha256').update(aliasName).digest('hex').slice(0, 40)}`;

export const ROOT_KEY_SECRET = 'datakey-root-key';

/**
 * The root key in Secret NS/datakey-root-key. When two replicas create it at once,
 * the create of one fails with a conflict and it reads the winner's.
 */
export function rootKeySecret(client: KubeClient, namespace: string): RootKeyLocation {
  const description = `Secret ${namespace}/${ROOT_KEY_SECRET}`;
  const read = async (): Promise<Buffer | undefined> => {
    const secret = await getRootKeySecret(client, namespace);
    if (!secret) return undefined;
    // Not damage but a start without the options it needs: exit and say so.
    if (secret.data?.sealedRootKey) {
      throw new Error(
        `${description} is sealed by a KMS key: start the operator with the --seal options ` +
          'it was sealed with (docs/operator.md, "Root of trust")',
      );
    }
    const material = Buffer.from(secret.data?.rootKey ?? '', 'base64');
    if (material.length !== ROOT_KEY_BYTES) {
      material.fill(0);
      throw new KeyStoreError(`${description} must hold a ${ROOT_KEY_BYTES}-byte rootKey`);
    }
    return material;
  };
  return {
    description,
    read,
    create: (material) =>
      createRootKeySecretOnce(
        client,
        () => rootKeySecretBody(namespace, { rootKey: material.toString('base64') }),
        material,
        read,
        description,
      ),
  };
}

/** The root-key Secret as stored, or undefined when there is none. */
export async function getRootKeySecret(
  client: KubeClient,
  namespace: string,
): Promise<SecretObject | undefined> {
  try {
    return await client.get<SecretObject>(`${secretsPath(namespace)}/${ROOT_KEY_SECRET}`);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The root-key Secret as written, sealed or not. */
export function rootKeySecretBody(
  namespace: string,
  data: Record<string, string>,
  resourceVersion?: string,
  annotations?: Record<string, string>,
): SecretObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kms.datakey.io/root-key',
    metadata: { name: ROOT_KEY_SECRET, namespace, resourceVersion, annotations },
    data,
  };
}

/**
 * Creates the root-key Secret (`secret` may seal first); when another replica
 * created it first (a conflict), this one's material is zeroed and the
 * winner's is read and returned.
 */
export async function createRootKeySecretOnce(
  client: KubeClient,
  secret: () => Promise<SecretObject> | SecretObject,
  material: Buffer,
  read: () => Promise<Buffer | undefined>,
  description: string,
): Promise<Buffer> {
  try {
    const body = await secret();
    await client.create(secretsPath(body.metadata.namespace as string), body);
    return material;
  } catch (err) {
    material.fill(0);
    if (!isConflict(err)) throw err;
  }
  const winner = await read();
  if (!winner) throw new Error(`${description} vanished right after it was created`);
  return winner;
}

import RPCClient from '@alicloud/pop-core';
import { randomBytes } from 'node:crypto';

/**
 * Provisions application access to a KMS instance the way the real service's
 * documentation does, through the OpenAPI (signature v1, @alicloud/pop-core):
 * network rules → policies → application access points → client keys.
 */

export interface OpenApi {
  url: string;
  accessKeyId: string;
  accessKeySecret: string;
}

export interface ClientKeyFile {
  /** The client key file's JSON: {"KeyId": ..., "PrivateKeyData": ...}. */
  content: string;
  password: string;
}

export interface Provisioned {
  instanceId: string;
  ca: string;
  keyId: string;
  otherKeyId: string;
  clients: Record<'good' | 'expired' | 'narrow' | 'network', ClientKeyFile>;
}

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function openApiClient(api: OpenApi) {
  const client = new RPCClient({
    endpoint: api.url,
    apiVersion: '2016-01-20',
    accessKeyId: api.accessKeyId,
    accessKeySecret: api.accessKeySecret,
  });
  return (action: string, params: Json = {}): Promise<Json> =>
    client.request(action, params, { method: 'POST' }) as Promise<Json>;
}

const PASSWORD = 'Test-pass-1234';
const kmsTime = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The instance's id and CA (ListKmsInstances, GetKmsInstance). */
export async function instanceOf(api: OpenApi): Promise<{ instanceId: string; ca: string }> {
  const call = openApiClient(api);
  const list = await call('ListKmsInstances');
  const instanceId = list.KmsInstances.KmsInstance[0].KmsInstanceId as string;
  const got = await call('GetKmsInstance', { KmsInstanceId: instanceId });
  return { instanceId, ca: got.KmsInstance.CaCertificateChainPem as string };
}

/**
 * Everything the SDK cases need: a key (given, or created in the instance),
 * another instance key, and client keys that are good, expired, limited by
 * policy to the other key, and limited by network rule to 10.0.0.0/8.
 */
export async function provision(api: OpenApi, keyId?: string): Promise<Provisioned> {
  const call = openApiClient(api);
  const { instanceId, ca } = await instanceOf(api);
  const tag = randomBytes(3).toString('hex');
  const createKey = async () =>
    (await call('CreateKey', { DKMSInstanceId: instanceId })).KeyMetadata.KeyId as string;
  const key = keyId ?? (await createKey());
  const otherKeyId = await createKey();

  await call('CreateNetworkRule', {
    Name: `loopback-${tag}`,
    Type: 'Private',
    SourcePrivateIp: JSON.stringify(['127.0.0.0/8', '::1']),
  });
  await call('CreateNetworkRule', {
    Name: `elsewhere-${tag}`,
    Type: 'Private',
    SourcePrivateIp: JSON.stringify(['10.0.0.0/8']),
  });
  const policy = async (name: string, resources: string[], rule: string) =>
    call('CreatePolicy', {
      Name: `${name}-${tag}`,
      Permissions: JSON.stringify(['RbacPermission/Template/CryptoServiceKeyUser']),
      Resources: JSON.stringify(resources),
      KmsInstance: instanceId,
      AccessControlRules: JSON.stringify({ NetworkRules: [`${rule}-${tag}`] }),
    });
  await policy('all-keys', ['key/*'], 'loopback');
  await policy('other-key', [`key/${otherKeyId}`], 'loopback');
  await policy('all-keys-far', ['key/*'], 'elsewhere');
  const accessPoint = (name: string, policyName: string) =>
    call('CreateApplicationAccessPoint', {
      Name: `${name}-${tag}`,
      AuthenticationMethod: 'ClientKey',
      Policies: JSON.stringify([`${policyName}-${tag}`]),
    });
  await accessPoint('app', 'all-keys');
  await accessPoint('narrow-app', 'other-key');
  await accessPoint('far-app', 'all-keys-far');

  const clientKey = async (aap: string, validity: Json = {}): Promise<ClientKeyFile> => {
    const created = await call('CreateClientKey', {
      AapName: `${aap}-${tag}`,
      Password: PASSWORD,
      ...validity,
    });
    return {
      content: JSON.stringify({
        KeyId: created.ClientKeyId,
        PrivateKeyData: created.PrivateKeyData,
      }),
      password: PASSWORD,
    };
  };
  const day = 86_400_000;
  return {
    instanceId,
    ca,
    keyId: key,
    otherKeyId,
    clients: {
      good: await clientKey('app'),
      expired: await clientKey('app', {
        NotBefore: kmsTime(Date.now() - 2 * day),
        NotAfter: kmsTime(Date.now() - day),
      }),
      narrow: await clientKey('narrow-app'),
      network: await clientKey('far-app'),
    },
  };
}

/** One good client key of another server's instance: foreign to the server under test. */
export async function foreignClientKey(api: OpenApi): Promise<ClientKeyFile> {
  return (await provision(api)).clients.good;
}

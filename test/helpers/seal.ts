import { readFileSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import RPCClient from '@alicloud/pop-core';
import { KubeConfig } from '@kubernetes/client-node';
import type { KubeObject } from '../../src/runtime/kube-client';
import { addressCertificate, startKms, type KmsProcess } from './kms-process';
import { client } from './operator-suite';
import { eventually } from './wait';

/**
 * A `kms serve` playing Alibaba KMS and STS for the root of trust: TLS, an STS
 * trust file whose OIDC provider is this cluster's kube-apiserver (its service
 * account issuer, read with a minted token and the cluster CA), and a seal key.
 */

export const ACCOUNT = '1234567890123456';
export const PROVIDER = `acs:ram::${ACCOUNT}:oidc-provider/ack-rrsa-local`;
export const ROLE = `acs:ram::${ACCOUNT}:role/datakey-seal`;
/** Issues credentials that expire 6 s after issue: inside the client's 15-minute refresh window. */
export const SHORT_ROLE = `acs:ram::${ACCOUNT}:role/datakey-seal-short`;
/** Nothing in a test may try the ECS metadata address. */
export const SEAL_ENV = { ALIBABA_CLOUD_ECS_METADATA_DISABLED: 'true' };
export const STS_AUDIENCE = 'sts.aliyuncs.com';

export interface SealKms {
  kms: KmsProcess;
  pop: RPCClient;
  sealKeyId: string;
  certFile: string;
  /** HOST:PORT of the KMS and STS endpoint. */
  endpoint(): string;
  /** Stops it; `start` again serves the same state on the same address. */
  start(): Promise<KmsProcess>;
}

/** A service-account token minted through the TokenRequest API. */
export async function mintToken(ns: string, sa: string, audiences?: string[]): Promise<string> {
  const r = await client.create<KubeObject & { status: { token: string } }>(
    `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`,
    {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: { audiences, expirationSeconds: 3600 },
    },
  );
  return r.status.token;
}

export async function ensureServiceAccount(ns: string, name: string): Promise<void> {
  try {
    await client.create(`/api/v1/namespaces/${ns}/serviceaccounts`, {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name },
    });
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 409) throw err;
  }
}

export function writeFile(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

/** The kube-apiserver's address and CA: where the emulated STS reads the issuer's keys. */
function apiServer(dir: string): { url: string; caFile: string } {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('no current cluster');
  const ca = cluster.caFile
    ? readFileSync(cluster.caFile, 'utf8')
    : Buffer.from(cluster.caData ?? '', 'base64').toString('utf8');
  return { url: cluster.server, caFile: writeFile(dir, 'apiserver-ca.crt', ca) };
}

/** Starts the KMS/STS on `host` (TLS for it), trusting `subjects` for ROLE and SHORT_ROLE. */
export async function startSealKms(
  dir: string,
  subjects: string[],
  host = '127.0.0.1',
): Promise<SealKms> {
  const { cert, key } = addressCertificate(dir, host);
  const api = apiServer(dir);
  // The credential the emulated STS reads the issuer's discovery documents with.
  await eventually('the default service account', 30_000, async () =>
    client.get('/api/v1/namespaces/default/serviceaccounts/default').catch(() => undefined),
  );
  const readerToken = writeFile(dir, 'reader.token', await mintToken('default', 'default'));
  const trustFile = writeFile(
    dir,
    'sts-trust.json',
    JSON.stringify({
      providers: {
        [PROVIDER]: {
          issuer: 'https://kubernetes.default.svc.cluster.local',
          discoveryUrl: api.url,
          caFile: api.caFile,
          tokenFile: readerToken,
        },
      },
      roles: {
        [ROLE]: { provider: PROVIDER, subjects },
        [SHORT_ROLE]: { provider: PROVIDER, subjects, issuedLifetimeSeconds: 6 },
      },
    }),
  );
  const args = ['--tls-cert', cert, '--tls-key', key, '--sts-trust', trustFile];
  const first = await startKms({ listen: `${host}:0`, args, env: SEAL_ENV });
  const pop = new RPCClient({
    endpoint: first.url,
    apiVersion: '2016-01-20',
    accessKeyId: first.accessKeyId,
    accessKeySecret: first.accessKeySecret,
    opts: { agent: new https.Agent({ ca: readFileSync(cert) }) },
  });
  const created = await pop.request<{ KeyMetadata: { KeyId: string } }>(
    'CreateKey',
    { Description: 'datakey-operator seal' },
    { method: 'POST' },
  );
  const sealKms: SealKms = {
    kms: first,
    pop,
    sealKeyId: created.KeyMetadata.KeyId,
    certFile: cert,
    endpoint: () => `${host}:${first.port}`,
    async start() {
      sealKms.kms = await startKms({
        listen: `${host}:${first.port}`,
        dataDir: first.dataDir,
        accessKeyId: first.accessKeyId,
        accessKeySecret: first.accessKeySecret,
        args,
        env: SEAL_ENV,
      });
      return sealKms.kms;
    },
  };
  return sealKms;
}

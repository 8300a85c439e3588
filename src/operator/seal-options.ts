import type { RootKeyLocation } from '../kms';
import type { KubeClient } from '../runtime/kube-client';
import { AliCloudKmsSeal, type SealContext } from '../seal/alicloudkms-seal';
import { alibabaCredentials } from '../seal/credentials';
import { sealContextOf, sealedRootKeySecret, type SealedRootKeyOptions } from './sealed-root-key';

/** `--seal alicloudkms --seal-key-id ID --seal-endpoint HOST[:PORT] --seal-region R [--sts-endpoint HOST[:PORT]]`. */
export interface SealOptions {
  keyId: string;
  endpoint: string;
  region: string;
  stsEndpoint?: string;
  /** The context of a restored blob, for its explicit re-seal (see docs/operator.md). */
  previousContext?: SealContext;
  /** How often the seal is checked mid-term (default 60 s). */
  checkIntervalMs?: number;
  /** How soon a failed unseal at start is retried (default 5 s). */
  retryMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** The seal's parts: credentials (RRSA or the environment), the KMS client, the context. */
export async function sealedRootKeyOptions(
  client: KubeClient,
  namespace: string,
  options: SealOptions,
): Promise<SealedRootKeyOptions> {
  const { credential } = alibabaCredentials(options.env ?? process.env, options.stsEndpoint);
  const seal = new AliCloudKmsSeal({
    keyId: options.keyId,
    endpoint: options.endpoint,
    region: options.region,
    credential,
  });
  const context = await sealContextOf(client, namespace);
  return { client, namespace, seal, context, previousContext: options.previousContext };
}

export async function openSeal(
  client: KubeClient,
  namespace: string,
  options: SealOptions,
): Promise<RootKeyLocation> {
  return sealedRootKeySecret(await sealedRootKeyOptions(client, namespace, options));
}

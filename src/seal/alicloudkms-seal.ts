import { randomBytes } from 'node:crypto';
import OpenApi, * as $OpenApi from '@alicloud/openapi-client';
import * as $Util from '@alicloud/tea-util';
import type Credential from '@alicloud/credentials';
import { open, sealInto, sealedLength, toSecretKey, zero } from '../kms/crypto';
import { SealError } from './seal-error';

export { SealError, type SealFailure } from './seal-error';

/** What the sealed root key is bound to: the cluster and the operator's namespace. */
export type SealContext = Record<string, string>;

export interface AliCloudKmsSealOptions {
  keyId: string;
  /** HOST[:PORT] of the KMS endpoint, reached over HTTPS. */
  endpoint: string;
  region: string;
  credential: Credential;
}

/** The sealed root key as stored (JSON); docs/ciphertext-format.md describes it. */
export interface SealedBlob {
  version: 1;
  seal: 'alicloudkms';
  /** The KMS key that sealed the wrapping key (its id as KMS answered). */
  keyId: string;
  /** KMS CiphertextBlob of the wrapping key, under the EncryptionContext. */
  wrappingKeyBlob: string;
  /** base64(iv | AES-256-GCM(root key) | tag) under the wrapping key. */
  rootKeyCiphertext: string;
}

const WRAPPING_KEY_BYTES = 32;
const KEY_UNAVAILABLE = new Set([
  'Rejected.Disabled',
  'Rejected.PendingDeletion',
  'Forbidden.KeyNotFound',
  'Forbidden.AliasNotFound',
  'Forbidden.KeyVersionNotFound',
]);
const CREDENTIALS_REFUSED =
  /^(InvalidSecurityToken|MissingSecurityToken|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden\.RAM)/;

/**
 * The auto-unseal pattern of Vault's `seal "alicloudkms"`: a fresh 32-byte
 * wrapping key is encrypted by the KMS key (bound by the EncryptionContext) and
 * seals the root key locally with AES-GCM; only the blob is stored. Calls go
 * through the official OpenAPI client (ACS3 signature, the STS token in
 * `x-acs-security-token`), which asks the credential for fresh keys each call.
 */
export class AliCloudKmsSeal {
  private readonly client: OpenApi;

  constructor(private readonly options: AliCloudKmsSealOptions) {
    this.client = new OpenApi(
      new $OpenApi.Config({
        credential: options.credential,
        endpoint: options.endpoint,
        regionId: options.region,
        protocol: 'https',
      }),
    );
  }

  get keyId(): string {
    return this.options.keyId;
  }

  async seal(rootKey: Buffer, context: SealContext): Promise<SealedBlob> {
    const wrapping = randomBytes(WRAPPING_KEY_BYTES);
    try {
      const answer = await this.call('Encrypt', {
        KeyId: this.options.keyId,
        Plaintext: wrapping.toString('base64'),
        EncryptionContext: JSON.stringify(context),
      });
      const keyId = String(answer.KeyId);
      const out = Buffer.alloc(sealedLength(rootKey.length));
      sealInto(toSecretKey(wrapping), rootKey, [bindingOf(context, keyId)], out, 0);
      return {
        version: 1,
        seal: 'alicloudkms',
        keyId,
        wrappingKeyBlob: String(answer.CiphertextBlob),
        rootKeyCiphertext: out.toString('base64'),
      };
    } finally {
      zero(wrapping);
    }
  }

  /** The root key (the caller zeroes it). */
  async unseal(blob: SealedBlob, context: SealContext): Promise<Buffer> {
    const answer = await this.call('Decrypt', {
      CiphertextBlob: blob.wrappingKeyBlob,
      EncryptionContext: JSON.stringify(context),
    });
    const wrapping = Buffer.from(String(answer.Plaintext), 'base64');
    try {
      const rootKey =
        wrapping.length === WRAPPING_KEY_BYTES
          ? open(toSecretKey(wrapping), Buffer.from(blob.rootKeyCiphertext, 'base64'), [
              bindingOf(context, blob.keyId),
            ])
          : undefined;
      if (!rootKey) {
        throw new SealError(
          'SealContextMismatch',
          'the sealed root key does not open under this context',
        );
      }
      return rootKey;
    } finally {
      zero(wrapping);
    }
  }

  private async call(
    action: string,
    query: Record<string, string>,
  ): Promise<Record<string, unknown>> {
    const params = kmsRpcParams(action, 'HTTPS');
    const runtime = new $Util.RuntimeOptions({ readTimeout: 10_000, connectTimeout: 5_000 });
    try {
      const res = await this.client.callApi(
        params,
        new $OpenApi.OpenApiRequest({ query }),
        runtime,
      );
      return (res as { body: Record<string, unknown> }).body;
    } catch (err) {
      throw sealErrorOf(action, err);
    }
  }
}

/** A KMS action as the generated SDKs (kms20160120 v3) describe it to the OpenAPI client. */
export function kmsRpcParams(action: string, protocol: 'HTTPS' | 'HTTP'): $OpenApi.Params {
  return new $OpenApi.Params({
    action,
    version: '2016-01-20',
    protocol,
    pathname: '/',
    method: 'POST',
    authType: 'AK',
    style: 'RPC',
    reqBodyType: 'formData',
    bodyType: 'json',
  });
}

/** Parses a stored blob; the error names what is wrong. */
export function parseSealedBlob(text: string): SealedBlob {
  let blob: Partial<SealedBlob>;
  try {
    blob = JSON.parse(text) as Partial<SealedBlob>;
  } catch {
    throw new SealError('SealBlobMalformed', 'the sealed root key is not JSON');
  }
  for (const field of ['keyId', 'wrappingKeyBlob', 'rootKeyCiphertext'] as const) {
    if (typeof blob?.[field] !== 'string' || blob[field] === '') {
      throw new SealError('SealBlobMalformed', `the sealed root key lacks ${field}`);
    }
  }
  if (blob.version !== 1 || blob.seal !== 'alicloudkms') {
    throw new SealError('SealBlobMalformed', 'the sealed root key is not an alicloudkms v1 blob');
  }
  return blob as SealedBlob;
}

/** Binds the local ciphertext to the context and key as well (the KMS blob already is). */
const bindingOf = (context: SealContext, keyId: string): Buffer =>
  Buffer.from(
    `datakey-operator/seal/v1|${JSON.stringify(Object.entries(context).sort())}|${keyId}`,
    'utf8',
  );

function sealErrorOf(action: string, err: unknown): SealError {
  const e = err as { code?: string; message?: string; data?: { httpCode?: number } };
  const message = String(e.message ?? err);
  const code = typeof e.code === 'string' ? e.code : '';
  if (message.includes('get sts token failed')) {
    return new SealError('StsRefused', `STS refused the OIDC token: ${message}`);
  }
  if (KEY_UNAVAILABLE.has(code)) {
    return new SealError(
      'SealKeyUnavailable',
      `KMS ${action}: the seal key is unavailable (${code})`,
    );
  }
  if (action === 'Decrypt' && code === 'InvalidParameter') {
    return new SealError(
      'SealContextMismatch',
      'KMS Decrypt refused the sealed root key under this cluster and namespace (sealed elsewhere?)',
    );
  }
  if (CREDENTIALS_REFUSED.test(code)) {
    return new SealError(
      'SealCredentialsRefused',
      `KMS ${action} refused the credentials (${code})`,
    );
  }
  if (e.data?.httpCode !== undefined) {
    return new SealError('SealKmsError', `KMS ${action} failed (${code || e.data.httpCode})`);
  }
  return new SealError(
    'SealEndpointUnreachable',
    `KMS ${action}: endpoint unreachable (${message})`,
  );
}

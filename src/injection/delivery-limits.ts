import { createPublicKey, verify, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { Logger } from '../common/logger';
import { RateLimiter } from '../kms';
import type { KubeClient } from '../runtime/kube-client';

/**
 * What the delivery endpoint lets through to the API server. Each agent request
 * costs a TokenReview, a pod read and a SubjectAccessReview per key, so:
 *
 * - a token whose signature does not verify against the cluster's service-account
 *   keys (the JWKS the API server publishes), or that has expired, is refused here
 *   without any API request: a flood of bad tokens costs the API server nothing
 *   and uses no one's budget;
 * - a genuine token is limited per pod (the pod the signed token is bound to) and
 *   all of them together globally. Beyond either, the answer is 429 with
 *   Retry-After. The API server then sees at most `global` × (2 + keys per
 *   request) requests a second from delivery.
 *
 * When the JWKS cannot be read, tokens go to the TokenReview unverified (still
 * under both limits), so the limits never make delivery depend on discovery.
 */

export const DEFAULT_PER_POD_RATE = 2;
export const DEFAULT_GLOBAL_RATE = 50;
/** An unknown key id re-reads the JWKS at most this often (key rotation is rare). */
const JWKS_REFRESH_MS = 30_000;

export interface DeliveryRates {
  /** Requests per second per pod; 0 = unlimited. */
  perPod: number;
  /** Requests per second in all; 0 = unlimited. */
  global: number;
}

export type Admission =
  | { ok: true }
  | { ok: false; status: 401; message: string }
  | { ok: false; status: 429; message: string; retryAfterSeconds: number };

interface TokenParts {
  signed: Buffer;
  signature: Buffer;
  header: { alg?: unknown; kid?: unknown };
  claims: {
    exp?: unknown;
    nbf?: unknown;
    sub?: unknown;
    'kubernetes.io'?: { pod?: { uid?: unknown } };
  };
}

function parseToken(token: string): TokenParts | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const json = (s: string) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as object;
    return {
      signed: Buffer.from(`${parts[0]}.${parts[1]}`),
      signature: Buffer.from(parts[2], 'base64url'),
      header: json(parts[0]) as TokenParts['header'],
      claims: json(parts[1]) as TokenParts['claims'],
    };
  } catch {
    return undefined;
  }
}

/** The signature algorithms of service-account tokens, as node:crypto verifies them. */
const ALGORITHMS: Record<string, { hash: string; dsaEncoding?: 'ieee-p1363'; pss?: boolean }> = {
  RS256: { hash: 'sha256' },
  RS384: { hash: 'sha384' },
  RS512: { hash: 'sha512' },
  PS256: { hash: 'sha256', pss: true },
  ES256: { hash: 'sha256', dsaEncoding: 'ieee-p1363' },
  ES384: { hash: 'sha384', dsaEncoding: 'ieee-p1363' },
};

export class DeliveryLimits {
  private readonly perPod: RateLimiter;
  private readonly global: RateLimiter;
  private keys = new Map<string, KeyObject>();
  private jwksReadMs = -Infinity;
  private jwksAvailable = false;
  private reading?: Promise<void>;

  constructor(
    private readonly client: KubeClient,
    rates: DeliveryRates,
    private readonly logger: Logger,
  ) {
    this.perPod = new RateLimiter(rates.perPod);
    this.global = new RateLimiter(rates.global);
  }

  /** Decides whether a request with this bearer token may cost API requests now. */
  async admit(token: string): Promise<Admission> {
    const parts = parseToken(token);
    if (!parts) return { ok: false, status: 401, message: 'the token is not a JWT' };
    const bad = await this.verifyLocally(parts);
    if (bad) return { ok: false, status: 401, message: bad };
    const podUid = parts.claims['kubernetes.io']?.pod?.uid;
    const caller =
      typeof podUid === 'string' ? `pod:${podUid}` : `subject:${String(parts.claims.sub)}`;
    const podWait = this.perPod.acquire(caller, 'deliver');
    if (podWait > 0) return tooMany('this pod', podWait);
    const globalWait = this.global.acquire('all', 'deliver');
    if (globalWait > 0) return tooMany('all pods together', globalWait);
    return { ok: true };
  }

  /** Why the token is not genuine, or undefined (also when the keys are unknown). */
  private async verifyLocally(parts: TokenParts): Promise<string | undefined> {
    const now = Date.now() / 1000;
    const { exp, nbf } = parts.claims;
    if (typeof exp !== 'number' || exp < now) return 'the token has expired';
    if (typeof nbf === 'number' && nbf > now + 60) return 'the token is not valid yet';
    const alg = ALGORITHMS[String(parts.header.alg)];
    if (!alg) return 'the token is not signed with a service-account algorithm';
    const kid = String(parts.header.kid ?? '');
    if (!this.keys.has(kid)) await this.readJwks();
    if (!this.jwksAvailable) return undefined;
    const key = this.keys.get(kid);
    if (!key) return 'the token is not signed by this cluster';
    const ok = verify(
      alg.hash,
      parts.signed,
      {
        key,
        dsaEncoding: alg.dsaEncoding,
        padding: alg.pss ? 6 /* RSA_PKCS1_PSS_PADDING */ : undefined,
      },
      parts.signature,
    );
    return ok ? undefined : 'the token is not signed by this cluster';
  }

  /** Reads the cluster's service-account public keys (at most once per refresh period). */
  private readJwks(): Promise<void> {
    if (Date.now() - this.jwksReadMs < JWKS_REFRESH_MS) return this.reading ?? Promise.resolve();
    this.jwksReadMs = Date.now();
    this.reading = (async () => {
      try {
        const jwks = await this.client.request<{ keys?: (JsonWebKey & { kid?: string })[] }>(
          'GET',
          '/openid/v1/jwks',
          { accept: 'application/jwk-set+json' },
        );
        const keys = new Map<string, KeyObject>();
        for (const jwk of jwks?.keys ?? []) {
          try {
            keys.set(jwk.kid ?? '', createPublicKey({ key: jwk, format: 'jwk' }));
          } catch {
            // a key type this process cannot use: its tokens go to the TokenReview
          }
        }
        this.keys = keys;
        this.jwksAvailable = keys.size > 0;
      } catch (err) {
        this.jwksAvailable = false;
        this.logger.warn(
          { err: (err as Error).message },
          'cannot read the service-account keys (/openid/v1/jwks): tokens are checked by TokenReview only',
        );
      }
    })();
    return this.reading;
  }
}

function tooMany(who: string, waitMs: number): Admission {
  const retryAfterSeconds = Math.max(1, Math.ceil(waitMs / 1000));
  return {
    ok: false,
    status: 429,
    message: `too many key requests from ${who}: retry after ${retryAfterSeconds} s`,
    retryAfterSeconds,
  };
}

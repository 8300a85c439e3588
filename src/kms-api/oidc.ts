import { createPublicKey, verify, type JsonWebKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';

/** An OIDC issuer this server trusts, and how to reach its discovery documents. */
export interface OidcIssuer {
  /** What tokens' `iss` must be, and what its discovery document must say. */
  issuer: string;
  /** Where the discovery documents are read (default: the issuer URL itself). */
  discoveryUrl?: string;
  /** PEM file of the CA that signs the discovery server's certificate. */
  caFile?: string;
  /** A bearer token to read the discovery documents with (many issuers want one). */
  tokenFile?: string;
}

export type OidcFailure = 'Expired' | 'AudienceNotMatch' | 'Invalid' | 'InvalidSignature';

export class OidcError extends Error {
  constructor(
    readonly failure: OidcFailure,
    message: string,
  ) {
    super(message);
    this.name = 'OidcError';
  }
}

export interface VerifiedToken {
  issuer: string;
  subject: string;
  audience: string[];
  issuedAtSeconds: number;
  expiresAtSeconds: number;
}

const JWKS_MAX_AGE_MS = 5 * 60_000;
const JWKS_MIN_REFETCH_MS = 10_000;
const ALGORITHMS: Record<string, { hash: string; dsaEncoding?: 'ieee-p1363' }> = {
  RS256: { hash: 'sha256' },
  ES256: { hash: 'sha256', dsaEncoding: 'ieee-p1363' },
  ES384: { hash: 'sha384', dsaEncoding: 'ieee-p1363' },
};

/**
 * Verifies JWTs of one issuer: signature by a key of the issuer's JWKS, issuer,
 * audience and lifetime. The discovery document and the JWKS are read from the
 * configured location only (the JWKS path from the discovery document, on the
 * configured origin), never from anything a token names.
 */
export class OidcVerifier {
  private keys?: { at: number; byKid: Map<string, KeyObject> };

  constructor(private readonly config: OidcIssuer) {}

  async verify(token: string, audience: string, nowMs: number): Promise<VerifiedToken> {
    const parts = token.trim().split('.');
    if (parts.length !== 3) throw new OidcError('Invalid', 'The OIDC token is not a JWT.');
    const header = decodePart(parts[0]);
    const claims = decodePart(parts[1]);
    const algorithm = typeof header.alg === 'string' ? ALGORITHMS[header.alg] : undefined;
    if (!algorithm || !Object.hasOwn(ALGORITHMS, header.alg as string)) {
      throw new OidcError('Invalid', 'The OIDC token has an unsupported algorithm.');
    }
    const key = await this.keyOf(typeof header.kid === 'string' ? header.kid : '', nowMs);
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`, 'utf8');
    const signature = Buffer.from(parts[2], 'base64url');
    if (
      !key ||
      !verify(algorithm.hash, signed, { key, dsaEncoding: algorithm.dsaEncoding }, signature)
    ) {
      throw new OidcError('InvalidSignature', 'The OIDC token signature is invalid.');
    }
    if (claims.iss !== this.config.issuer) {
      throw new OidcError('Invalid', "The OIDC token issuer is not the provider's issuer.");
    }
    const aud = typeof claims.aud === 'string' ? [claims.aud] : claims.aud;
    const audiences = Array.isArray(aud)
      ? aud.filter((a): a is string => typeof a === 'string')
      : [];
    if (!audiences.includes(audience)) {
      throw new OidcError('AudienceNotMatch', `The OIDC token audience is not ${audience}.`);
    }
    const exp = claims.exp;
    const nbf = typeof claims.nbf === 'number' ? claims.nbf : 0;
    if (typeof exp !== 'number' || typeof claims.sub !== 'string') {
      throw new OidcError('Invalid', 'The OIDC token lacks exp or sub.');
    }
    if (nowMs / 1000 >= exp || nowMs / 1000 < nbf - 60) {
      throw new OidcError('Expired', 'The OIDC token has expired or is not yet valid.');
    }
    return {
      issuer: this.config.issuer,
      subject: claims.sub,
      audience: audiences,
      issuedAtSeconds: typeof claims.iat === 'number' ? claims.iat : nbf,
      expiresAtSeconds: exp,
    };
  }

  /** The key for `kid`, re-reading the JWKS once when it is unknown (keys rotate). */
  private async keyOf(kid: string, nowMs: number): Promise<KeyObject | undefined> {
    if (this.keys && nowMs - this.keys.at < JWKS_MAX_AGE_MS) {
      const known = this.keys.byKid.get(kid);
      // Unknown kids re-read the JWKS at most every 10 s: tokens cannot make this server flood the issuer.
      if (known || nowMs - this.keys.at < JWKS_MIN_REFETCH_MS) return known;
    }
    this.keys = { at: nowMs, byKid: await this.fetchKeys() };
    return this.keys.byKid.get(kid);
  }

  private async fetchKeys(): Promise<Map<string, KeyObject>> {
    const base = new URL(this.config.discoveryUrl ?? this.config.issuer);
    const discovery = await this.fetchJson(
      new URL(`${base.pathname.replace(/\/$/, '')}/.well-known/openid-configuration`, base),
    );
    if (discovery.issuer !== this.config.issuer) {
      throw new Error(`the discovery document of ${base.origin} names another issuer`);
    }
    const jwksUri = new URL(String(discovery.jwks_uri));
    const jwks = await this.fetchJson(new URL(jwksUri.pathname, base));
    const byKid = new Map<string, KeyObject>();
    for (const jwk of Array.isArray(jwks.keys) ? (jwks.keys as JsonWebKey[]) : []) {
      try {
        byKid.set(String(jwk.kid ?? ''), createPublicKey({ key: jwk, format: 'jwk' }));
      } catch {
        // A key type this server cannot use is skipped, as any relying party does.
      }
    }
    return byKid;
  }

  private fetchJson(url: URL): Promise<Record<string, unknown>> {
    const { caFile, tokenFile } = this.config;
    const headers: Record<string, string> = {
      accept: 'application/json, application/jwk-set+json',
    };
    if (tokenFile) headers.authorization = `Bearer ${readFileSync(tokenFile, 'utf8').trim()}`;
    return new Promise((resolve, reject) => {
      const req = https.get(
        url,
        { headers, ca: caFile ? readFileSync(caFile) : undefined, timeout: 10_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            if (res.statusCode !== 200) {
              reject(new Error(`${url.pathname} answered HTTP ${res.statusCode}`));
              return;
            }
            try {
              resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
            } catch {
              reject(new Error(`${url.pathname} is not JSON`));
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${url.pathname} timed out`)));
      req.on('error', reject);
    });
  }
}

function decodePart(part: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
  } catch {
    // fall through
  }
  throw new OidcError('Invalid', 'The OIDC token is not a well-formed JWT.');
}

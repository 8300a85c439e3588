import { readFileSync } from 'node:fs';
import { KmsError, missingParameter, invalidParameter } from '../kms/errors';
import { ownEntry } from '../kms/validate';
import { OidcError, OidcVerifier, type OidcIssuer } from './oidc';
import type { Params } from './params';
import { TemporaryCredentials } from './temporary-credentials';

export const STS_VERSION = '2015-04-01';
/** The audience ACK's RRSA tokens carry and STS insists on. */
export const STS_AUDIENCE = 'sts.aliyuncs.com';
const MIN_DURATION_SECONDS = 900;
const DEFAULT_DURATION_SECONDS = 3600;

/**
 * The trust file of `kms serve --sts-trust FILE` (JSON): the OIDC providers
 * trusted (ARN → issuer) and the roles (ARN → provider and allowed subjects).
 */
export interface StsTrust {
  providers: Record<string, OidcIssuer>;
  roles: Record<string, StsRole>;
}

export interface StsRole {
  /** The OIDC provider ARN whose tokens may assume the role. */
  provider: string;
  /** Allowed `sub` claims, e.g. system:serviceaccount:datakey-system:datakey-operator. */
  subjects: string[];
  /** The role's MaxSessionDuration (default 3600). */
  maxSessionDurationSeconds?: number;
  /**
   * Testing knob: the issued credentials expire this many seconds after issue,
   * whatever was asked, so clients can be seen refreshing across an expiry.
   */
  issuedLifetimeSeconds?: number;
}

/** Reads and checks a trust file; the error names the bad field. */
export function readStsTrust(file: string): StsTrust {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`--sts-trust ${file}: not readable JSON (${(err as Error).message})`);
  }
  const trust = raw as Partial<StsTrust>;
  const fail = (field: string, why: string) => new Error(`--sts-trust ${file}: ${field} ${why}`);
  if (!isRecord(trust.providers)) throw fail('providers', 'must be an object');
  if (!isRecord(trust.roles)) throw fail('roles', 'must be an object');
  for (const [arn, p] of Object.entries(trust.providers)) {
    if (!isRecord(p) || typeof p.issuer !== 'string' || !p.issuer.startsWith('https://')) {
      throw fail(`providers["${arn}"].issuer`, 'must be an https URL');
    }
  }
  for (const [arn, r] of Object.entries(trust.roles)) {
    if (
      !isRecord(r) ||
      typeof r.provider !== 'string' ||
      !Object.hasOwn(trust.providers, r.provider)
    ) {
      throw fail(`roles["${arn}"].provider`, 'must name a provider of the file');
    }
    if (!Array.isArray(r.subjects) || !r.subjects.every((s) => typeof s === 'string')) {
      throw fail(`roles["${arn}"].subjects`, 'must be a list of strings');
    }
  }
  return trust as StsTrust;
}

/**
 * STS `AssumeRoleWithOIDC` (an unsigned call): an OIDC token of a trusted
 * provider, for a role whose allowed subjects include the token's, is exchanged
 * for temporary credentials that the KMS API accepts with their security token.
 */
export class StsService {
  readonly credentials: TemporaryCredentials;
  private readonly verifiers = new Map<string, OidcVerifier>();

  constructor(
    private readonly trust: StsTrust,
    accountSecret: string,
    private readonly accountId: string,
  ) {
    this.credentials = new TemporaryCredentials(accountSecret);
  }

  async assumeRoleWithOidc(params: Params, nowMs: number): Promise<Record<string, unknown>> {
    const providerArn = required(params, 'OIDCProviderArn');
    const roleArn = required(params, 'RoleArn');
    const token = required(params, 'OIDCToken');
    const sessionName = required(params, 'RoleSessionName');
    if (!/^[\w.@-]{2,64}$/.test(sessionName)) throw invalidParameter('RoleSessionName');
    const provider = ownEntry(this.trust.providers, providerArn);
    if (!provider) {
      throw new KmsError(
        404,
        'EntityNotExist.OIDCProvider',
        'The specified OIDC provider does not exist.',
      );
    }
    const role = ownEntry(this.trust.roles, roleArn);
    if (!role) throw new KmsError(404, 'EntityNotExist.Role', 'The specified role does not exist.');
    const maxSeconds = role.maxSessionDurationSeconds ?? DEFAULT_DURATION_SECONDS;
    const duration = Number(params.optional('DurationSeconds') ?? DEFAULT_DURATION_SECONDS);
    if (!Number.isInteger(duration) || duration < MIN_DURATION_SECONDS || duration > maxSeconds) {
      throw invalidParameter(
        'DurationSeconds',
        `It must be from ${MIN_DURATION_SECONDS} to ${maxSeconds}.`,
      );
    }
    const verified = await this.verify(providerArn, provider, token, nowMs);
    if (role.provider !== providerArn || !role.subjects.includes(verified.subject)) {
      throw new KmsError(
        403,
        'AuthenticationFail.NoPermission',
        'The OIDC token is not allowed to assume the specified role.',
      );
    }
    const lifetime = role.issuedLifetimeSeconds ?? duration;
    const issued = this.credentials.issue(roleArn, nowMs + lifetime * 1000);
    const roleName = roleArn.slice(roleArn.lastIndexOf('/') + 1);
    return {
      Credentials: {
        AccessKeyId: issued.accessKeyId,
        AccessKeySecret: issued.accessKeySecret,
        SecurityToken: issued.securityToken,
        Expiration: utcSeconds(issued.expiresAtMs),
      },
      AssumedRoleUser: {
        Arn: `acs:ram::${this.accountId}:assumed-role/${roleName}/${sessionName}`,
        AssumedRoleId: `3${this.accountId.slice(1)}:${sessionName}`,
      },
      OIDCTokenInfo: {
        Subject: verified.subject,
        Issuer: verified.issuer,
        ClientIds: verified.audience.join(','),
        IssuanceTime: utcSeconds(verified.issuedAtSeconds * 1000),
        ExpirationTime: utcSeconds(verified.expiresAtSeconds * 1000),
      },
    };
  }

  private async verify(arn: string, provider: OidcIssuer, token: string, nowMs: number) {
    let verifier = this.verifiers.get(arn);
    if (!verifier) this.verifiers.set(arn, (verifier = new OidcVerifier(provider)));
    try {
      return await verifier.verify(token, STS_AUDIENCE, nowMs);
    } catch (err) {
      if (err instanceof OidcError) {
        throw new KmsError(400, `AuthenticationFail.OIDCToken.${err.failure}`, err.message);
      }
      throw new KmsError(
        503,
        'ServiceUnavailable',
        `The OIDC provider's keys could not be read: ${(err as Error).message}`,
      );
    }
  }
}

function required(params: Params, name: string): string {
  const value = params.optional(name);
  if (!value) throw missingParameter(name);
  return value;
}

const utcSeconds = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

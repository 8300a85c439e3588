import { createHmac, randomBytes } from 'node:crypto';
import { KmsError } from '../kms/errors';
import { signatureMatches } from './signature';

/** Temporary access key ids start so, as Alibaba STS's do. */
export const TEMPORARY_KEY_PREFIX = 'STS.';

export interface IssuedCredentials {
  accessKeyId: string;
  accessKeySecret: string;
  securityToken: string;
  expiresAtMs: number;
}

interface TokenPayload {
  /** The access key id the token belongs to. */
  k: string;
  /** Expiry, ms since the epoch. */
  e: number;
  /** The role assumed. */
  r: string;
}

/**
 * Temporary credentials (what STS issues) that need no state: the secret and
 * the security token are MACs under a key derived from the account's own secret,
 * so they verify after a restart and cannot be forged without that secret. The
 * token carries its key id and expiry; a KMS call signed with a temporary key id
 * must present the matching, unexpired token.
 */
export class TemporaryCredentials {
  private readonly key: Buffer;

  constructor(accountSecret: string) {
    this.key = createHmac('sha256', accountSecret).update('datakey-sts/v1').digest();
  }

  issue(roleArn: string, expiresAtMs: number): IssuedCredentials {
    const accessKeyId = `${TEMPORARY_KEY_PREFIX}${randomBytes(16).toString('base64url')}`;
    const payload: TokenPayload = { k: accessKeyId, e: expiresAtMs, r: roleArn };
    const body = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
    return {
      accessKeyId,
      accessKeySecret: this.secretOf(accessKeyId),
      securityToken: `CAIS.${body}.${this.mac(`token|${body}`)}`,
      expiresAtMs,
    };
  }

  /**
   * The secret of a temporary key id once its token checks out: present
   * (MissingSecurityToken), well-formed and ours (InvalidSecurityToken.Malformed),
   * for this key id (.MismatchWithAccessKey) and unexpired (.Expired).
   */
  secretFor(accessKeyId: string, securityToken: string | undefined, nowMs: number): string {
    if (!securityToken) {
      throw new KmsError(400, 'MissingSecurityToken', 'The SecurityToken is required.');
    }
    const payload = this.parse(securityToken);
    if (!payload) {
      throw new KmsError(
        400,
        'InvalidSecurityToken.Malformed',
        'The specified SecurityToken is malformed.',
      );
    }
    if (!signatureMatches(payload.k, accessKeyId)) {
      throw new KmsError(
        400,
        'InvalidSecurityToken.MismatchWithAccessKey',
        'The specified SecurityToken does not match the AccessKeyId.',
      );
    }
    if (nowMs >= payload.e) {
      throw new KmsError(400, 'InvalidSecurityToken.Expired', 'The SecurityToken has expired.');
    }
    return this.secretOf(accessKeyId);
  }

  private parse(token: string): TokenPayload | undefined {
    const match = /^CAIS\.([A-Za-z0-9_-]{1,2048})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!match || !signatureMatches(this.mac(`token|${match[1]}`), match[2])) return undefined;
    try {
      const payload = JSON.parse(Buffer.from(match[1], 'base64url').toString('utf8')) as unknown;
      const p = payload as Partial<TokenPayload>;
      return typeof p.k === 'string' && typeof p.e === 'number' && typeof p.r === 'string'
        ? (payload as TokenPayload)
        : undefined;
    } catch {
      return undefined;
    }
  }

  private secretOf(accessKeyId: string): string {
    return this.mac(`secret|${accessKeyId}`).slice(0, 30);
  }

  private mac(text: string): string {
    return createHmac('sha256', this.key).update(text).digest('base64url');
  }
}

import type { IncomingHttpHeaders } from 'node:http';
import { KmsError } from '../kms/errors';
import {
  acs3Signature,
  acs3StringToSign,
  checkContentSha256,
  isHeaderSigned,
  parseAcs3Authorization,
  requiredHeader,
} from './acs3';
import { NonceCache } from './nonce-cache';
import type { Params } from './params';
import { signatureMatches, signStringV1, stringToSignV1 } from './signature';
import { TEMPORARY_KEY_PREFIX, type TemporaryCredentials } from './temporary-credentials';

export const TIMESTAMP_WINDOW_MS = 15 * 60 * 1000;
const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,3})?Z$/;

/** The prefix real Alibaba services put before their string to sign; legacy SDKs parse it. */
export const MISMATCH_MESSAGE =
  'Specified signature is not matched with our calculation. server string to sign is:';

export interface AuthCredentials {
  accessKeyId: string;
  accessKeySecret: string;
}

export interface SignedRequest {
  method: string;
  /** Path and query as sent. */
  url: string;
  headers: IncomingHttpHeaders;
}

/** What a verified signature covers: the action and API version the caller asked for. */
export interface Authenticated {
  scheme: 'v1' | 'ACS3';
  action: string | undefined;
  version: string | undefined;
}

/**
 * Verifies a request's signature, signature v1 (parameters) or ACS3 (headers),
 * with the same rules for both, in this order: every signature field present
 * (IncompleteSignature), the scheme supported, the AccessKeyId known
 * (InvalidAccessKeyId.NotFound; a temporary `STS.` one only with its matching,
 * unexpired security token, when STS is on), the time within 15 minutes (IllegalTimestamp),
 * the signature right (SignatureDoesNotMatch, compared in constant time), then
 * the nonce unused (SignatureNonceUsed). Nothing about the requested action or
 * its parameters is looked at before this passes.
 */
export class Authenticator {
  private readonly nonces = new NonceCache(TIMESTAMP_WINDOW_MS);

  constructor(
    private readonly credentials: AuthCredentials,
    private readonly nowMs: () => number,
    private readonly temporary?: TemporaryCredentials,
  ) {}

  authenticate(req: SignedRequest, params: Params, body: Buffer): Authenticated {
    return isHeaderSigned(req.headers, params.optional('Signature') !== undefined)
      ? this.acs3(req, body)
      : this.v1(req.method, params);
  }

  private v1(method: string, params: Params): Authenticated {
    const accessKeyId = signatureParameter(params, 'AccessKeyId');
    const signature = signatureParameter(params, 'Signature');
    const timestamp = signatureParameter(params, 'Timestamp');
    const nonce = signatureParameter(params, 'SignatureNonce');
    if (params.optional('SignatureMethod') !== 'HMAC-SHA1') {
      throw new KmsError(400, 'IncompleteSignature', 'SignatureMethod must be HMAC-SHA1.');
    }
    if (params.optional('SignatureVersion') !== '1.0') {
      throw new KmsError(400, 'IncompleteSignature', 'SignatureVersion must be 1.0.');
    }
    const secret = this.secretOf(accessKeyId, params.optional('SecurityToken'));
    const signedAt = this.checkTimestamp(timestamp, 'Timestamp');
    const stringToSign = stringToSignV1(method, params.all);
    const expected = signStringV1(stringToSign, secret);
    this.checkSignature(expected, signature, stringToSign);
    this.useNonce(accessKeyId, nonce, signedAt);
    return { scheme: 'v1', action: params.optional('Action'), version: params.optional('Version') };
  }

  private acs3(req: SignedRequest, body: Buffer): Authenticated {
    const auth = parseAcs3Authorization(req.headers.authorization);
    const date = requiredHeader(req.headers, 'x-acs-date');
    const nonce = requiredHeader(req.headers, 'x-acs-signature-nonce');
    const contentSha256 = requiredHeader(req.headers, 'x-acs-content-sha256');
    const token = req.headers['x-acs-security-token'];
    const secret = this.secretOf(auth.accessKeyId, typeof token === 'string' ? token : undefined);
    const signedAt = this.checkTimestamp(date, 'x-acs-date');
    const at = req.url.indexOf('?');
    const [path, query] = at < 0 ? [req.url, ''] : [req.url.slice(0, at), req.url.slice(at + 1)];
    const stringToSign = acs3StringToSign(auth, req.method, path, query, req.headers);
    const expected = acs3Signature(auth, secret, stringToSign);
    this.checkSignature(expected, auth.signature, stringToSign);
    checkContentSha256(contentSha256, body);
    this.useNonce(auth.accessKeyId, nonce, signedAt);
    return {
      scheme: 'ACS3',
      action: req.headers['x-acs-action'] as string | undefined,
      version: req.headers['x-acs-version'] as string | undefined,
    };
  }

  /** The secret to check the signature with: the account's, or a temporary key's. */
  private secretOf(accessKeyId: string, securityToken: string | undefined): string {
    if (this.temporary && accessKeyId.startsWith(TEMPORARY_KEY_PREFIX)) {
      return this.temporary.secretFor(accessKeyId, securityToken, this.nowMs());
    }
    if (!signatureMatches(this.credentials.accessKeyId, accessKeyId)) {
      throw new KmsError(404, 'InvalidAccessKeyId.NotFound', 'Specified access key is not found.');
    }
    return this.credentials.accessKeySecret;
  }

  /** Returns the signed time; throws when it is malformed or outside the window. */
  private checkTimestamp(value: string, name: string): number {
    const match = TIMESTAMP.exec(value);
    const at = match ? Date.parse(value) : NaN;
    if (Number.isNaN(at)) {
      throw new KmsError(400, 'InvalidTimeStamp.Format', `Specified ${name} is not valid.`);
    }
    if (Math.abs(this.nowMs() - at) > TIMESTAMP_WINDOW_MS) {
      throw new KmsError(
        400,
        'IllegalTimestamp',
        `The input parameter ${name} is not within 15 minutes of the server time.`,
      );
    }
    return at;
  }

  /** The message carries the server's string to sign, as the real service's does; never a secret. */
  private checkSignature(expected: string, given: string, stringToSign: string): void {
    if (!signatureMatches(expected, given)) {
      throw new KmsError(400, 'SignatureDoesNotMatch', `${MISMATCH_MESSAGE}${stringToSign}`);
    }
  }

  /** Only verified requests reach the nonce cache, so unsigned noise cannot fill it. */
  private useNonce(accessKeyId: string, nonce: string, signedAt: number): void {
    if (!this.nonces.add(`${accessKeyId}\u0000${nonce}`, this.nowMs(), signedAt)) {
      throw new KmsError(400, 'SignatureNonceUsed', 'Specified signature nonce was used already.');
    }
  }
}

/** A missing signature field is IncompleteSignature (the documented code), naming the field. */
function signatureParameter(params: Params, name: string): string {
  const value = params.optional(name);
  if (value === undefined || value === '') {
    throw new KmsError(400, 'IncompleteSignature', `The signature parameter ${name} is required.`);
  }
  return value;
}

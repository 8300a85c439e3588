import { createHash, createHmac } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { KmsError } from '../kms/errors';
import { printable } from './params';
import { percentEncode } from './signature';

/**
 * ACS3 request signatures (V3), as the current-generation SDKs compute them
 * (darabonba-openapi / tea-openapi `GetAuthorization`, openapi-util):
 *
 *   CanonicalRequest = METHOD \n PATH \n CanonicalQuery \n CanonicalHeaders \n
 *                      SignedHeaders \n x-acs-content-sha256
 *   StringToSign     = ALGORITHM \n hex(HASH(CanonicalRequest))
 *   Signature        = hex(HMAC(AccessKeySecret, StringToSign))
 *
 * CanonicalQuery: query parameters (not the form body; the body is covered by
 * x-acs-content-sha256) sorted by name, `name=RFC3986(value)` joined by `&`.
 * CanonicalHeaders: `lower(name):trim(value)\n` for each header the client listed
 * in SignedHeaders, sorted. The server signs exactly the headers the client says
 * it signed: Python signs every header, Go and Java only host, x-acs-*, content-type.
 */

const ALGORITHMS = {
  'ACS3-HMAC-SHA256': 'sha256',
  'ACS3-HMAC-SM3': 'sm3',
} as const;
type Acs3Algorithm = keyof typeof ALGORITHMS;

/** Headers every ACS3 request must sign: they carry the action, time, nonce and body hash. */
const REQUIRED_SIGNED = [
  'host',
  'x-acs-action',
  'x-acs-content-sha256',
  'x-acs-date',
  'x-acs-signature-nonce',
  'x-acs-version',
];

const AUTHORIZATION = /^(\S+) Credential=([^,]*),SignedHeaders=([^,]*),Signature=([0-9a-fA-F]*)$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export interface Acs3Authorization {
  algorithm: Acs3Algorithm;
  accessKeyId: string;
  signedHeaders: string[];
  signature: string;
}

const incomplete = (why: string) => new KmsError(400, 'IncompleteSignature', why);

/**
 * True when the request is signed in headers (ACS3) rather than with v1
 * parameters. A v1 `Signature` parameter wins: the legacy Node SDKs send
 * x-acs-action too.
 */
export function isHeaderSigned(headers: IncomingHttpHeaders, hasV1Signature: boolean): boolean {
  if (hasV1Signature) return false;
  return headers.authorization !== undefined || headers['x-acs-action'] !== undefined;
}

/**
 * Parses `Authorization`. Schemes other than ACS3-HMAC-* (ACS4 of the API
 * gateway, ACS3-RSA-SHA256, Bearer...) get a 400 that names the scheme.
 */
export function parseAcs3Authorization(header: string | undefined): Acs3Authorization {
  if (!header) throw incomplete('The Authorization header is missing.');
  const scheme = header.split(' ', 1)[0];
  if (!Object.hasOwn(ALGORITHMS, scheme)) {
    throw new KmsError(
      400,
      'UnsupportedSignatureAlgorithm',
      `The signature scheme ${printable(scheme)} is not supported; sign with ACS3-HMAC-SHA256 ` +
        '(the SDKs default), ACS3-HMAC-SM3 or signature v1 (HMAC-SHA1).',
    );
  }
  const match = AUTHORIZATION.exec(header);
  if (!match) {
    throw incomplete(
      'The Authorization header must be "<algorithm> Credential=<id>,SignedHeaders=<h1;h2>,Signature=<hex>".',
    );
  }
  const signedHeaders = match[3].split(';');
  for (const name of REQUIRED_SIGNED) {
    if (!signedHeaders.includes(name)) throw incomplete(`SignedHeaders must include ${name}.`);
  }
  return {
    algorithm: scheme as Acs3Algorithm,
    accessKeyId: match[2],
    signedHeaders,
    signature: match[4].toLowerCase(),
  };
}

/** The value of a header the request must carry; absent → IncompleteSignature naming it. */
export function requiredHeader(headers: IncomingHttpHeaders, name: string): string {
  const value = headers[name];
  const text = Array.isArray(value) ? value.join(',') : value;
  if (text === undefined || text === '') throw incomplete(`The header ${name} is required.`);
  return text;
}

/** Checks the declared body hash against the body; a mismatch means the body was altered. */
export function checkContentSha256(declared: string, body: Buffer): void {
  if (!SHA256_HEX.test(declared) || declared !== sha256Hex(body)) {
    throw new KmsError(
      400,
      'InvalidParameter',
      'The specified parameter x-acs-content-sha256 is not valid. It must be the hex SHA-256 of the request body.',
    );
  }
}

export function acs3StringToSign(
  auth: Acs3Authorization,
  method: string,
  rawPath: string,
  rawQuery: string,
  headers: IncomingHttpHeaders,
): string {
  const canonicalHeaders = [...auth.signedHeaders]
    .sort()
    .map((name) => `${name}:${headerValue(headers, name)}\n`)
    .join('');
  const canonicalRequest = [
    method,
    rawPath === '' ? '/' : rawPath,
    canonicalQuery(rawQuery),
    canonicalHeaders,
    auth.signedHeaders.join(';'),
    headerValue(headers, 'x-acs-content-sha256'),
  ].join('\n');
  const hash = createHash(ALGORITHMS[auth.algorithm]).update(canonicalRequest, 'utf8');
  return `${auth.algorithm}\n${hash.digest('hex')}`;
}

export function acs3Signature(auth: Acs3Authorization, secret: string, stringToSign: string) {
  return createHmac(ALGORITHMS[auth.algorithm], secret).update(stringToSign, 'utf8').digest('hex');
}

/** Query parameters as decoded from the wire (`+` is a space), sorted, RFC 3986 encoded. */
function canonicalQuery(rawQuery: string): string {
  if (rawQuery === '') return '';
  const pairs = [...new URLSearchParams(rawQuery)].filter(([name]) => name !== '');
  pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return pairs.map(([n, v]) => `${percentEncode(n)}=${percentEncode(v)}`).join('&');
}

/** A signed header's value; the names come from the client, so own properties only. */
function headerValue(headers: IncomingHttpHeaders, name: string): string {
  const value = Object.hasOwn(headers, name) ? headers[name] : undefined;
  return (Array.isArray(value) ? value.join(',') : (value ?? '')).trim();
}

function sha256Hex(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

export interface Acs3SignOptions {
  /** `host` as the client sends it, e.g. `127.0.0.1:8443`. */
  host: string;
  date: string;
  nonce: string;
  method?: string;
  /** Form body, if any; its SHA-256 is signed. */
  body?: string;
  secret?: string;
  algorithm?: Acs3Algorithm;
}

/**
 * Client side, as the current SDKs sign: the request headers (Authorization
 * included) for `action` with `query` (already `name=value&...` encoded). Used
 * by the benchmark and the tests.
 */
export function signAcs3Request(
  credentials: { accessKeyId: string; accessKeySecret: string },
  action: string,
  query: string,
  options: Acs3SignOptions,
): Record<string, string> {
  const body = Buffer.from(options.body ?? '', 'utf8');
  const headers: Record<string, string> = {
    host: options.host,
    'x-acs-action': action,
    'x-acs-version': '2016-01-20',
    'x-acs-date': options.date,
    'x-acs-signature-nonce': options.nonce,
    'x-acs-content-sha256': sha256Hex(body),
  };
  if (body.length > 0) headers['content-type'] = 'application/x-www-form-urlencoded';
  const auth: Acs3Authorization = {
    algorithm: options.algorithm ?? 'ACS3-HMAC-SHA256',
    accessKeyId: credentials.accessKeyId,
    signedHeaders: Object.keys(headers).sort(),
    signature: '',
  };
  const method = options.method ?? 'POST';
  const stringToSign = acs3StringToSign(auth, method, '/', query, headers);
  const signature = acs3Signature(
    auth,
    options.secret ?? credentials.accessKeySecret,
    stringToSign,
  );
  headers.authorization =
    `${auth.algorithm} Credential=${auth.accessKeyId},` +
    `SignedHeaders=${auth.signedHeaders.join(';')},Signature=${signature}`;
  return headers;
}

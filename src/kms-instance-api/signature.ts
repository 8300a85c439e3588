import { createHash, sign, type KeyObject } from 'node:crypto';

/**
 * The dkms-gcs-0.2 request signature, as the instance SDKs compute it:
 * StringToSign = POST\n content-sha256\n content-type\n date\n, then every
 * `x-kms-*` header sorted by name as `name:value\n`, then the resource `/`;
 * signed RSASSA-PKCS1-v1_5 SHA-256, sent as `authorization: Bearer <base64>`.
 */

export const API_VERSION = 'dkms-gcs-0.2';
export const PROTOBUF = 'application/x-protobuf';

/** `headers` has lower-case names and trimmed values. */
export function stringToSign(headers: Readonly<Record<string, string>>): string {
  const kmsHeaders = Object.keys(headers)
    .filter((name) => name.startsWith('x-kms-'))
    .sort()
    .map((name) => `${name}:${headers[name]}\n`)
    .join('');
  const at = (name: string) => (Object.hasOwn(headers, name) ? headers[name] : '');
  return `POST\n${at('content-sha256')}\n${at('content-type')}\n${at('date')}\n${kmsHeaders}/`;
}

export const contentSha256 = (body: Buffer): string =>
  createHash('sha256').update(body).digest('hex').toUpperCase();

/** The headers of a signed request, for clients that are not an SDK (tests, benchmarks). */
export function signedHeaders(
  operation: string,
  body: Buffer,
  clientKeyId: string,
  privateKey: KeyObject,
  date = new Date(),
): Record<string, string> {
  const headers: Record<string, string> = {
    date: date.toUTCString(),
    'x-kms-apiversion': API_VERSION,
    'x-kms-apiname': operation,
    'x-kms-signaturemethod': 'RSA_PKCS1_SHA_256',
    'x-kms-acccesskeyid': clientKeyId,
    'content-type': PROTOBUF,
    'content-sha256': contentSha256(body),
  };
  const signature = sign('sha256', Buffer.from(stringToSign(headers), 'utf8'), privateKey);
  headers.authorization = `Bearer ${signature.toString('base64')}`;
  return headers;
}

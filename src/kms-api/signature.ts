import { createHmac, timingSafeEqual } from 'node:crypto';

/** Alibaba Cloud RPC signature, version 1.0 (HMAC-SHA1). */

export function percentEncode(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** Every parameter but `Signature`, sorted by code point, encoded and joined. */
export function canonicalQuery(params: ReadonlyMap<string, string>): string {
  const names = [...params.keys()].filter((n) => n !== 'Signature').sort(byCodePoint);
  return names
    .map((n) => `${percentEncode(n)}=${percentEncode(params.get(n) as string)}`)
    .join('&');
}

/** `METHOD&%2F&percentEncode(canonicalQuery)`: what real KMS echoes after "server string to sign is:". */
export function stringToSignV1(method: string, params: ReadonlyMap<string, string>): string {
  return `${method}&${percentEncode('/')}&${percentEncode(canonicalQuery(params))}`;
}

export function signStringV1(stringToSign: string, secret: string): string {
  return createHmac('sha1', `${secret}&`).update(stringToSign, 'utf8').digest('base64');
}

export function signatureV1(
  method: string,
  params: ReadonlyMap<string, string>,
  secret: string,
): string {
  return signStringV1(stringToSignV1(method, params), secret);
}

/** Constant-time comparison of the expected signature and the one the client sent. */
export function signatureMatches(expected: string, given: string): boolean {
  const a = Buffer.from(expected, 'utf8');
  const b = Buffer.from(given, 'utf8');
  // Compare against a same-length buffer even on length mismatch, so timing reveals nothing.
  return timingSafeEqual(a, b.length === a.length ? b : a) && b.length === a.length;
}

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface SigningCredentials {
  accessKeyId: string;
  accessKeySecret: string;
}

/**
 * Client side: the common RPC parameters plus `params`, signed. Used by the
 * benchmark and the tests; `Signature` is the last entry of the map.
 */
export function signRequest(
  credentials: SigningCredentials,
  action: string,
  params: Record<string, string>,
  options: { method?: string; timestamp: string; nonce: string; secret?: string },
): Map<string, string> {
  const all = new Map<string, string>(
    Object.entries({
      Action: action,
      Version: '2016-01-20',
      Format: 'JSON',
      AccessKeyId: credentials.accessKeyId,
      SignatureMethod: 'HMAC-SHA1',
      SignatureVersion: '1.0',
      SignatureNonce: options.nonce,
      Timestamp: options.timestamp,
      ...params,
    }),
  );
  const secret = options.secret ?? credentials.accessKeySecret;
  all.set('Signature', signatureV1(options.method ?? 'GET', all, secret));
  return all;
}

/** `name=value&...` in the order given, each part percent-encoded. */
export function encodeParams(params: ReadonlyMap<string, string>): string {
  return [...params].map(([k, v]) => `${percentEncode(k)}=${percentEncode(v)}`).join('&');
}

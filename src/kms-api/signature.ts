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

export function signatureV1(
  method: string,
  params: ReadonlyMap<string, string>,
  secret: string,
): string {
  const stringToSign = `${method}&${percentEncode('/')}&${percentEncode(canonicalQuery(params))}`;
  return createHmac('sha1', `${secret}&`).update(stringToSign, 'utf8').digest('base64');
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

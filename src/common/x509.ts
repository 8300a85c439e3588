import * as crypto from 'node:crypto';
import * as net from 'node:net';

/**
 * Just enough DER to issue CAs and TLS certificates signed with ECDSA P-256
 * in-process (the webhook's, the KMS instance's): the image has no openssl
 * binary, and the X.509 libraries on npm pull in a reflect-metadata polyfill
 * and a DI container. The DER helpers also build the instance's PKCS#12 files.
 */

export function tlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  let length: Buffer;
  if (n < 0x80) length = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    length = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), length, content]);
}

export const sequence = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
export const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
export const octetString = (b: Buffer) => tlv(0x04, b);
export const explicit = (n: number, inner: Buffer) => tlv(0xa0 + n, inner);
const booleanTrue = () => tlv(0x01, Buffer.from([0xff]));

export function integer(unsigned: Buffer): Buffer {
  let i = 0;
  while (i < unsigned.length - 1 && unsigned[i] === 0) i++;
  const b = unsigned.subarray(i);
  return tlv(0x02, b[0] & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

export function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [40 * a + b];
  for (const arc of rest) {
    const bytes = [arc & 0x7f];
    for (let v = arc >>> 7; v > 0; v >>>= 7) bytes.unshift(0x80 | (v & 0x7f));
    out.push(...bytes);
  }
  return tlv(0x06, Buffer.from(out));
}

/** A DER BIT STRING of named bits (bit 0 = most significant), trailing zero bits dropped. */
function namedBits(bits: number[]): Buffer {
  const bytes = Buffer.alloc(Math.floor(Math.max(...bits) / 8) + 1);
  for (const bit of bits) bytes[bit >> 3] |= 0x80 >> (bit & 7);
  const last = bytes[bytes.length - 1];
  let unused = 0;
  while (unused < 7 && !(last & (1 << unused))) unused++;
  return tlv(0x03, Buffer.concat([Buffer.from([unused]), bytes]));
}

function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(iso.slice(2)))
    : tlv(0x18, Buffer.from(iso));
}

const name = (commonName: string) =>
  sequence(set(sequence(oid('2.5.4.3'), tlv(0x0c, Buffer.from(commonName, 'utf8')))));

const extension = (id: string, value: Buffer, critical = false) =>
  sequence(oid(id), ...(critical ? [booleanTrue()] : []), octetString(value));

function subjectAltNames(hosts: string[]): Buffer {
  return sequence(
    ...hosts.map((h) => {
      if (net.isIPv4(h)) return tlv(0x87, Buffer.from(h.split('.').map(Number)));
      if (net.isIPv6(h)) return tlv(0x87, ipv6Bytes(h));
      return tlv(0x82, Buffer.from(h, 'ascii'));
    }),
  );
}

function ipv6Bytes(address: string): Buffer {
  const [head, tail = ''] = address.split('::');
  const parts = (s: string) => (s ? s.split(':') : []);
  const groups = address.includes('::')
    ? [
        ...parts(head),
        ...Array<string>(8 - parts(head).length - parts(tail).length).fill('0'),
        ...parts(tail),
      ]
    : parts(address);
  return Buffer.from(groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]));
}

const ECDSA_WITH_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));

function keyIdentifier(spki: Buffer): Buffer {
  return crypto.createHash('sha1').update(spki).digest();
}

export interface CertificateRequest {
  commonName: string;
  publicKey: crypto.KeyObject;
  notBefore: Date;
  notAfter: Date;
  isCA: boolean;
  /** DNS names and IP addresses (server certificates). */
  hosts?: string[];
  /** Extended key usage of a leaf certificate; default server. */
  usage?: 'server' | 'client';
}

export interface Issuer {
  commonName: string;
  privateKey: crypto.KeyObject;
  publicKey: crypto.KeyObject;
}

/** Issues a certificate for `request`, signed by `issuer` (self-signed when they are the same key). */
export function issueCertificate(request: CertificateRequest, issuer: Issuer): string {
  const spki = request.publicKey.export({ type: 'spki', format: 'der' });
  const issuerSpki = issuer.publicKey.export({ type: 'spki', format: 'der' });
  const extensions = [
    extension('2.5.29.19', request.isCA ? sequence(booleanTrue()) : sequence(), true),
    // digitalSignature (0), keyCertSign (5), cRLSign (6)
    extension('2.5.29.15', namedBits(request.isCA ? [0, 5, 6] : [0]), true),
    extension('2.5.29.14', octetString(keyIdentifier(spki))),
    extension('2.5.29.35', sequence(tlv(0x80, keyIdentifier(issuerSpki)))),
  ];
  if (!request.isCA) {
    const purpose = request.usage === 'client' ? '1.3.6.1.5.5.7.3.2' : '1.3.6.1.5.5.7.3.1';
    extensions.push(extension('2.5.29.37', sequence(oid(purpose))));
    if (request.usage !== 'client') {
      extensions.push(extension('2.5.29.17', subjectAltNames(request.hosts ?? [])));
    }
  }
  const tbs = sequence(
    explicit(0, integer(Buffer.from([2]))),
    integer(Buffer.concat([Buffer.from([0x01]), crypto.randomBytes(15)])),
    ECDSA_WITH_SHA256,
    name(issuer.commonName),
    sequence(time(request.notBefore), time(request.notAfter)),
    name(request.commonName),
    spki,
    explicit(3, sequence(...extensions)),
  );
  const signature = crypto.sign('sha256', tbs, { key: issuer.privateKey, dsaEncoding: 'der' });
  const der = sequence(
    tbs,
    ECDSA_WITH_SHA256,
    tlv(0x03, Buffer.concat([Buffer.from([0]), signature])),
  );
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

export function newKeyPair(): { privateKey: crypto.KeyObject; publicKey: crypto.KeyObject } {
  return crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

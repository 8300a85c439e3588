import { createCipheriv, createHash, createHmac, randomBytes, type KeyObject } from 'node:crypto';
import { explicit, integer, octetString, oid, sequence, set, tlv } from '../common/x509';

/**
 * The client key file's PKCS#12, in the one shape every instance SDK reads: the
 * Go SDK's decoder (golang.org/x/crypto/pkcs12) takes only
 * pbeWithSHAAnd3-KeyTripleDES-CBC bags and a SHA-1 MAC, and uses the first bag
 * as the certificate and the second as the RSA key. So: two bags, certificate
 * (plain `data`) then the 3DES-shrouded PKCS#8 key, each with a localKeyId and
 * friendlyName (Java pairs key and certificate through them), HMAC-SHA-1 MAC.
 */

const OID = {
  data: '1.2.840.113549.1.7.1',
  certBag: '1.2.840.113549.1.12.10.1.3',
  shroudedKeyBag: '1.2.840.113549.1.12.10.1.2',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  pbeSha1TripleDes: '1.2.840.113549.1.12.1.3',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
  sha1: '1.3.14.3.2.26',
};
const ITERATIONS = 2048;
const SALT_BYTES = 8;

/** PKCS#12 passwords are BMPStrings (UTF-16BE) with a terminating NUL. */
function bmpPassword(password: string): Buffer {
  const units = Buffer.from(`${password}\u0000`, 'utf16le');
  return units.swap16();
}

/** RFC 7292 appendix B.2 key derivation with SHA-1 (u = 20, v = 64). */
export function pkcs12Kdf(
  password: Buffer,
  salt: Buffer,
  id: 1 | 2 | 3,
  iterations: number,
  bytes: number,
): Buffer {
  const v = 64;
  const stretch = (input: Buffer) => {
    const out = Buffer.alloc(v * Math.ceil(input.length / v));
    for (let i = 0; i < out.length; i++) out[i] = input[i % input.length];
    return out;
  };
  const I = Buffer.concat([stretch(salt), stretch(password)]);
  const D = Buffer.alloc(v, id);
  const result: Buffer[] = [];
  for (let produced = 0; produced < bytes; produced += 20) {
    let A = createHash('sha1').update(D).update(I).digest();
    for (let r = 1; r < iterations; r++) A = createHash('sha1').update(A).digest();
    result.push(A);
    const B = stretch(A);
    for (let j = 0; j < I.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k--) {
        const sum = I[j + k] + B[k] + carry;
        I[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return Buffer.concat(result).subarray(0, bytes);
}

function attributes(friendlyName: string, localKeyId: Buffer): Buffer {
  const bmp = Buffer.from(friendlyName, 'utf16le').swap16();
  return set(
    sequence(oid(OID.friendlyName), set(tlv(0x1e, bmp))),
    sequence(oid(OID.localKeyId), set(octetString(localKeyId))),
  );
}

const dataContentInfo = (content: Buffer) =>
  sequence(oid(OID.data), explicit(0, octetString(content)));

export function toPkcs12(
  privateKey: KeyObject,
  certificateDer: Buffer,
  password: string,
  friendlyName: string,
): Buffer {
  const pass = bmpPassword(password);
  const localKeyId = createHash('sha1').update(certificateDer).digest();
  const bagAttributes = attributes(friendlyName, localKeyId);

  const certBag = sequence(
    oid(OID.certBag),
    explicit(0, sequence(oid(OID.x509Certificate), explicit(0, octetString(certificateDer)))),
    bagAttributes,
  );

  const keySalt = randomBytes(SALT_BYTES);
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const cipher = createCipheriv(
    'des-ede3-cbc',
    pkcs12Kdf(pass, keySalt, 1, ITERATIONS, 24),
    pkcs12Kdf(pass, keySalt, 2, ITERATIONS, 8),
  );
  const encryptedKey = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
  pkcs8.fill(0);
  const keyBag = sequence(
    oid(OID.shroudedKeyBag),
    explicit(
      0,
      sequence(
        sequence(
          oid(OID.pbeSha1TripleDes),
          sequence(octetString(keySalt), integer(uint(ITERATIONS))),
        ),
        octetString(encryptedKey),
      ),
    ),
    bagAttributes,
  );

  const authenticatedSafe = sequence(
    dataContentInfo(sequence(certBag)),
    dataContentInfo(sequence(keyBag)),
  );
  const macSalt = randomBytes(SALT_BYTES);
  const mac = createHmac('sha1', pkcs12Kdf(pass, macSalt, 3, ITERATIONS, 20))
    .update(authenticatedSafe)
    .digest();
  pass.fill(0);
  return sequence(
    integer(Buffer.from([3])),
    dataContentInfo(authenticatedSafe),
    sequence(
      sequence(sequence(oid(OID.sha1), tlv(0x05, Buffer.alloc(0))), octetString(mac)),
      octetString(macSalt),
      integer(uint(ITERATIONS)),
    ),
  );
}

function uint(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value);
  return out;
}

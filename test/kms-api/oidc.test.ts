// Generic OIDC verification as the emulated STS does it, against an issuer served
// on loopback over TLS that wants a bearer token for its discovery documents.
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { OidcVerifier, type OidcFailure } from '../../src/kms-api/oidc';
import { addressCertificate, makeTempDir } from '../helpers/kms-process';

const ISSUER = 'https://issuer.example.invalid';
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const requested: string[] = [];
let server: https.Server;
let verifier: OidcVerifier;

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

function jwt(claims: Record<string, unknown>, alg = 'RS256', kid = 'rsa-1', key = rsa.privateKey) {
  const head = `${b64({ alg, kid, typ: 'JWT' })}.${b64(claims)}`;
  const signature = sign(
    'sha256',
    Buffer.from(head),
    alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : (key as KeyObject),
  );
  return `${head}.${signature.toString('base64url')}`;
}

const now = Math.floor(Date.now() / 1000);
const good = {
  iss: ISSUER,
  sub: 'system:serviceaccount:datakey-system:datakey-operator',
  aud: ['sts.aliyuncs.com'],
  iat: now,
  exp: now + 600,
};

beforeAll(async () => {
  const dir = makeTempDir('datakey-oidc-');
  const { cert, key } = addressCertificate(dir);
  const tokenFile = path.join(dir, 'reader.token');
  writeFileSync(tokenFile, 'reader-token\n');
  server = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
    requested.push(req.url ?? '');
    if (req.headers.authorization !== 'Bearer reader-token') return res.writeHead(401).end();
    if (req.url === '/.well-known/openid-configuration') {
      // The JWKS location names another host: only its path is used.
      return res.end(
        JSON.stringify({ issuer: ISSUER, jwks_uri: 'https://elsewhere.invalid/keys' }),
      );
    }
    if (req.url === '/keys') {
      return res.end(
        JSON.stringify({
          keys: [
            { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'rsa-1', alg: 'RS256' },
            { ...ec.publicKey.export({ format: 'jwk' }), kid: 'ec-1', alg: 'ES256' },
          ],
        }),
      );
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  verifier = new OidcVerifier({
    issuer: ISSUER,
    discoveryUrl: `https://127.0.0.1:${port}`,
    caFile: cert,
    tokenFile,
  });
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

const failure = (token: string, atMs = Date.now()): Promise<OidcFailure | 'verified'> =>
  verifier.verify(token, 'sts.aliyuncs.com', atMs).then(
    () => 'verified',
    (err: { failure?: OidcFailure; message: string }) => err.failure ?? (err.message as never),
  );

test('a token of the issuer verifies (RS256 and ES256); keys come from the configured origin only', async () => {
  const verified = await verifier.verify(jwt(good), 'sts.aliyuncs.com', Date.now());
  expect(verified).toMatchObject({ subject: good.sub, issuer: ISSUER, expiresAtSeconds: good.exp });
  expect(await failure(jwt(good, 'ES256', 'ec-1', ec.privateKey))).toBe('verified');
  expect(requested).toEqual(['/.well-known/openid-configuration', '/keys']);
});

test('expired, wrong audience, wrong issuer, bad signature and malformed tokens are refused by kind', async () => {
  expect(await failure(jwt(good), (good.exp + 1) * 1000)).toBe('Expired');
  expect(await failure(jwt({ ...good, aud: 'api' }))).toBe('AudienceNotMatch');
  expect(await failure(jwt({ ...good, iss: 'https://other.invalid' }))).toBe('Invalid');
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
  expect(await failure(jwt(good, 'RS256', 'rsa-1', other.privateKey))).toBe('InvalidSignature');
  expect(await failure(jwt(good, 'RS256', 'unknown-kid'))).toBe('InvalidSignature');
  expect(await failure('a.b')).toBe('Invalid');
  expect(await failure(`${b64({ alg: 'constructor' })}.${b64(good)}.x`)).toBe('Invalid');
  expect(await failure(`${b64({ alg: 'none' })}.${b64(good)}.`)).toBe('Invalid');
});

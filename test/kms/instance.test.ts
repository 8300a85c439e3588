import { X509Certificate, createPublicKey, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { KmsCore, KmsError, ManualClock, MemoryKeyStore, RootKey } from '../../src/kms';
import { addressIn, type KmsInstance } from '../../src/kms/instance';
import { decode, encode, ProtobufError } from '../../src/kms-instance-api/protobuf';
import { MESSAGES } from '../../src/kms-instance-api/messages';

/**
 * The core's KMS instance on a memory store: validation of the access chain
 * (errors name the field), the authorisation decision, persistence through the
 * store, the PKCS#12 the SDKs read, and the protobuf codec.
 */

const KEY_USER = '["RbacPermission/Template/CryptoServiceKeyUser"]';

async function openCore(store = new MemoryKeyStore(), rootKey = new RootKey(randomBytes(32))) {
  const clock = new ManualClock(new Date('2026-12-01T12:00:00Z'));
  const core = await KmsCore.open({ store, rootKey, clock });
  return { core, store, clock };
}

async function chain(instance: KmsInstance, resources = '["key/*"]', ip = '["127.0.0.0/8"]') {
  await instance.createNetworkRule({ name: 'local', sourcePrivateIp: ip });
  await instance.createPolicy({
    name: 'p',
    permissions: KEY_USER,
    resources,
    accessControlRules: '{"NetworkRules":["local"]}',
  });
  await instance.createApplicationAccessPoint({ name: 'app', policies: '["p"]' });
  return instance.createClientKey({ aapName: 'app', password: 'Passw0rd-1' });
}

async function codeOf(call: () => unknown): Promise<string> {
  try {
    await call();
  } catch (err) {
    return `${(err as KmsError).code}: ${(err as KmsError).message}`;
  }
  return 'no error';
}

test('the instance is created once, persisted, and instance keys get key- ids', async () => {
  const rootMaterial = randomBytes(32);
  const sameRoot = new RootKey(Buffer.from(rootMaterial));
  const { core, store } = await openCore(new MemoryKeyStore(), new RootKey(rootMaterial));
  const root = new RootKey(randomBytes(32));
  expect(core.instance).toBeUndefined();
  const instance = await core.ensureInstance();
  expect(instance.id).toMatch(/^kst-[a-z0-9]{21}$/);
  expect(await core.ensureInstance()).toBe(instance);
  expect(new X509Certificate(instance.record.caCertificatePem).ca).toBe(true);
  const key = await core.createKey({ dkmsInstanceId: instance.id });
  expect(key.keyId).toMatch(/^key-[a-z0-9]{21}$/);
  expect(key.dkmsInstanceId).toBe(instance.id);
  expect((await core.createKey({})).dkmsInstanceId).toBeUndefined();
  expect(await codeOf(() => core.createKey({ dkmsInstanceId: 'kst-other' }))).toMatch(
    /^InvalidParameter: .*DKMSInstanceId/,
  );
  const { clientKey } = await chain(instance);

  const saved = (await store.load()).instance;
  expect(saved?.instanceId).toBe(instance.id);
  expect(JSON.stringify(saved)).not.toContain('PRIVATE KEY');
  const again = await KmsCore.open({ store, rootKey: sameRoot });
  expect(again.instance?.id).toBe(instance.id);
  expect(again.instance?.clientKey(clientKey.clientKeyId).aapName).toBe('app');

  // The CA key is wrapped by the root key: another root key cannot open the instance.
  const lone = new MemoryKeyStore();
  await (
    await KmsCore.open({ store: lone, rootKey: new RootKey(randomBytes(32)) })
  ).ensureInstance();
  const refused = await KmsCore.open({ store: lone, rootKey: root }).catch((e: Error) => e);
  expect(String(refused)).toMatch(/instance-ca .*cannot be unwrapped/);
  expect(clientKey.clientKeyId).toMatch(/^KAAP\.[0-9a-f-]{36}$/);
});

test('the access chain validates every field and names it', async () => {
  const { core } = await openCore();
  const instance = await core.ensureInstance();
  expect(
    await codeOf(() => instance.createNetworkRule({ name: 'r', sourcePrivateIp: '["300.1.1.1"]' })),
  ).toMatch(/^InvalidParameter: .*SourcePrivateIp/);
  expect(await codeOf(() => instance.createNetworkRule({ name: 'r', type: 'Public' }))).toMatch(
    /Type/,
  );
  expect(await codeOf(() => instance.createNetworkRule({ name: 'bad name!' }))).toMatch(/Name/);
  await instance.createNetworkRule({ name: 'r', sourcePrivateIp: '["10.0.0.0/8"]' });
  expect(await codeOf(() => instance.createNetworkRule({ name: 'r' }))).toMatch(/ResourceExists/);
  const policy = (over: Record<string, string>) =>
    instance.createPolicy({ name: 'p', permissions: KEY_USER, resources: '["key/*"]', ...over });
  expect(await codeOf(() => policy({ permissions: '["Admin"]' }))).toMatch(/Permissions/);
  expect(await codeOf(() => policy({ resources: '"key/*"' }))).toMatch(/Resources/);
  expect(await codeOf(() => policy({ accessControlRules: '{"NetworkRules":["nope"]}' }))).toMatch(
    /AccessControlRules/,
  );
  expect(await codeOf(() => policy({ kmsInstance: 'kst-x' }))).toMatch(/KmsInstance/);
  await policy({ accessControlRules: '{"NetworkRules":["r"]}' });
  expect(
    await codeOf(() =>
      instance.createApplicationAccessPoint({ name: 'a', policies: '["p","p2","p3","p4"]' }),
    ),
  ).toMatch(/Policies/);
  await instance.createApplicationAccessPoint({ name: 'a', policies: '["p"]' });
  expect(await codeOf(() => instance.createClientKey({ aapName: 'a', password: 'short' }))).toMatch(
    /^InvalidParameter: .*Password/,
  );
  expect(
    await codeOf(() =>
      instance.createClientKey({
        aapName: 'a',
        password: 'Passw0rd-1',
        notBefore: '2026-01-01T00:00:00Z',
      }),
    ),
  ).toMatch(/NotAfter/);
  expect(
    await codeOf(() => instance.createClientKey({ aapName: 'x', password: 'Passw0rd-1' })),
  ).toMatch(/ResourceNotFound/);
  expect(await codeOf(() => instance.deleteNetworkRule('r'))).toMatch(/ResourceInUse: .*policy p/);
  expect(await codeOf(() => instance.deletePolicy('p'))).toMatch(/ResourceInUse/);
});

test('authorisation: resource, permission template and network rule', async () => {
  const { core } = await openCore();
  const instance = await core.ensureInstance();
  const { clientKey } = await chain(instance, '["key/key-aaa"]', '["127.0.0.1","fd00::/8"]');
  expect(instance.refusal(clientKey, 'key/key-aaa', '127.0.0.1')).toBeUndefined();
  expect(instance.refusal(clientKey, 'key/key-aaa', '::ffff:127.0.0.1')).toBeUndefined();
  expect(instance.refusal(clientKey, 'key/key-aaa', 'fd00::5')).toBeUndefined();
  expect(instance.refusal(clientKey, 'key/key-bbb', '127.0.0.1')).toBe('policy');
  expect(instance.refusal(clientKey, 'key/key-aaa', '10.1.2.3')).toBe('network');
  expect(instance.refusal(clientKey, undefined, '127.0.0.1')).toBeUndefined();
  expect(addressIn('192.168.1.7', '192.168.0.0/16')).toBe(true);
  expect(addressIn('192.169.1.7', '192.168.0.0/16')).toBe(false);
  expect(addressIn('not an ip', '0.0.0.0/0')).toBe(false);
});

test('the client key file: two bags, certificate first, 3DES and a SHA-1 MAC; same public key', async () => {
  const { core } = await openCore();
  const instance = await core.ensureInstance();
  const created = await chain(instance);
  const dir = mkdtempSync(path.join(tmpdir(), 'datakey-p12-test-'));
  try {
    const file = path.join(dir, 'k.p12');
    writeFileSync(file, created.privateKeyData);
    const info = execFileSync(
      'openssl',
      ['pkcs12', '-info', '-in', file, '-passin', 'pass:Passw0rd-1', '-nodes'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    ).toString();
    const certAt = info.indexOf('BEGIN CERTIFICATE');
    const keyAt = info.indexOf('BEGIN PRIVATE KEY');
    expect(certAt).toBeGreaterThan(-1);
    expect(keyAt).toBeGreaterThan(certAt);
    expect(info.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    const stderr = execFileSync('sh', [
      '-c',
      `openssl pkcs12 -info -in ${file} -passin pass:Passw0rd-1 -nodes -noout 2>&1`,
    ]).toString();
    expect(stderr).toContain('MAC: sha1');
    expect(stderr).toContain('pbeWithSHA1And3-KeyTripleDES-CBC');
    const cert = new X509Certificate(info.slice(certAt - 11, info.indexOf('END CERTIFICATE') + 25));
    const key = createPublicKey(info.slice(keyAt - 11, info.indexOf('END PRIVATE KEY') + 25));
    expect(cert.publicKey.export({ type: 'spki', format: 'der' })).toEqual(
      key.export({ type: 'spki', format: 'der' }),
    );
    expect(cert.checkIssued(new X509Certificate(instance.record.caCertificatePem))).toBe(true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('protobuf: round trip, proto3 defaults omitted, negative int32, malformed input named', () => {
  const schema = MESSAGES.AdvanceGenerateDataKey.request;
  const bytes = encode(schema, { KeyId: 'key-1', NumberOfBytes: 32, Aad: Buffer.from('a') });
  // Field 1 "key-1", field 2 varint 32, field 3 bytes "a": the bytes protoc would write.
  expect(bytes.toString('hex')).toBe('0a056b65792d3110201a0161');
  expect(decode(schema, bytes)).toEqual({
    KeyId: 'key-1',
    NumberOfBytes: 32,
    Aad: Buffer.from('a'),
  });
  expect(encode(schema, { KeyId: '', NumberOfBytes: 0 }).length).toBe(0);
  expect(decode(schema, encode(schema, { NumberOfBytes: -1 })).NumberOfBytes).toBe(-1);
  // Unknown fields of every wire type are skipped.
  expect(decode(schema, Buffer.from('28073101020304050607083501020304', 'hex'))).toEqual({});
  for (const [hex, why] of [
    ['0a', 'truncated'],
    ['0a05616263', 'truncated'],
    ['10ffffffffffffffffffff01', 'varint'],
    ['0b', 'wire type'],
    ['1205616263', 'wire type'],
    ['0a02c328', 'UTF-8'],
    ['00', 'field number'],
  ]) {
    expect(() => decode(schema, Buffer.from(hex, 'hex'))).toThrow(ProtobufError);
    expect(() => decode(schema, Buffer.from(hex, 'hex'))).toThrow(why);
  }
});

test('replicas: the loser of the create race adopts the instance; a failed write retries on the fresh record', async () => {
  class ConflictingStore extends MemoryKeyStore {
    failNext = false;
    override async putInstance(...args: Parameters<MemoryKeyStore['putInstance']>) {
      if (this.failNext) {
        this.failNext = false;
        throw new Error('Conflict: the object has been modified');
      }
      return super.putInstance(...args);
    }
  }
  const store = new ConflictingStore();
  const material = randomBytes(32);
  const a = (await openCore(store, new RootKey(Buffer.from(material)))).core;
  const b = (await openCore(store, new RootKey(material))).core;
  const instanceA = await a.ensureInstance();
  const instanceB = await b.ensureInstance();
  expect(instanceB.id).toBe(instanceA.id);

  await instanceA.createNetworkRule({ name: 'from-a' });
  expect(() => instanceB.networkRule('from-a')).toThrow(KmsError); // b has not seen it yet
  store.failNext = true; // as a resourceVersion conflict would
  await instanceB.createNetworkRule({ name: 'from-b' });
  const saved = (await store.load()).instance;
  expect(saved?.networkRules.map((r) => r.name)).toEqual(['from-a', 'from-b']);
});

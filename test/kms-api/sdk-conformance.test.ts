import Client, * as $Kms from '@alicloud/kms20160120';
import RPCClient from '@alicloud/pop-core';
import * as $Util from '@alicloud/tea-util';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import {
  addressCertificate,
  makeTempDir,
  runCli,
  startKms,
  type KmsProcess,
} from '../helpers/kms-process';
import { kmsTimestamp, rawRequest, signedRequest, type RawResponse } from '../helpers/raw-request';

/**
 * Black-box conformance: `datakey kms serve` as a child process, driven by the
 * official Alibaba Cloud Node SDKs (@alicloud/kms20160120 and @alicloud/pop-core),
 * unchanged. Where an SDK has no method for an operation we use the SDK's own
 * generic `doRequest`; only what no SDK can send (wrong timestamps, replayed
 * nonces, XML) goes through hand-signed raw requests.
 */

interface SdkError {
  code: string;
  message: string;
  data: { Code: string; Message: string; RequestId: string; HostId?: string };
}

type Json = Record<string, unknown>;

const b64 = (b: Buffer) => b.toString('base64');
const fromB64 = (s: string) => Buffer.from(s, 'base64');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const KMS_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

function kmsClient(server: KmsProcess, overrides: { id?: string; secret?: string } = {}): Client {
  return new Client({
    accessKeyId: overrides.id ?? server.accessKeyId,
    accessKeySecret: overrides.secret ?? server.accessKeySecret,
    regionId: 'cn-hangzhou',
    endpoint: `127.0.0.1:${server.port}`,
    protocol: 'http',
  } as ConstructorParameters<typeof Client>[0]);
}

function popClient(server: KmsProcess, overrides: { id?: string; secret?: string } = {}) {
  return new RPCClient({
    endpoint: server.url,
    apiVersion: '2016-01-20',
    accessKeyId: overrides.id ?? server.accessKeyId,
    accessKeySecret: overrides.secret ?? server.accessKeySecret,
  });
}

async function caught(promise: Promise<unknown>): Promise<SdkError> {
  try {
    await promise;
  } catch (err) {
    return err as SdkError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** kms20160120 SDK errors: code `<Code>Error`, message `code: <status>, <Message> requestid: <id>`. */
async function expectSdkError(
  promise: Promise<unknown>,
  code: string,
  status: number,
  messageNames?: string,
): Promise<SdkError> {
  const err = await caught(promise);
  expect({ code: err.code, dataCode: err.data?.Code }).toEqual({
    code: `${code}Error`,
    dataCode: code,
  });
  expect(err.message).toContain(`code: ${status},`);
  expect(err.data.RequestId).toMatch(UUID);
  expect(typeof err.data.Message).toBe('string');
  if (messageNames) expect(err.data.Message).toContain(messageNames);
  return err;
}

/** pop-core errors: `code` is the Alibaba Code, `entry.response.statusCode` the HTTP status. */
async function expectPopError(
  promise: Promise<unknown>,
  code: string,
  status: number,
  messageNames?: string,
): Promise<SdkError> {
  const err = (await caught(promise)) as SdkError & { entry: { response: { statusCode: number } } };
  expect(err.code).toBe(code);
  expect(err.entry.response.statusCode).toBe(status);
  expect(err.data.RequestId).toMatch(UUID);
  if (messageNames) expect(err.data.Message).toContain(messageNames);
  return err;
}

function expectErrorBody(res: RawResponse, status: number, code: string): void {
  expect({ status: res.status, code: res.json?.Code }).toEqual({ status, code });
  expect(typeof res.json?.Message).toBe('string');
  expect(res.json?.RequestId).toMatch(UUID);
}

describe('official SDKs against `datakey kms serve`', () => {
  let server: KmsProcess;
  let kms: Client;
  let pop: RPCClient;
  const runtime = new $Util.RuntimeOptions({});
  /** The kms20160120 SDK's generic call, for actions it has no method for. */
  const call = (action: string, query: Record<string, unknown>) =>
    kms.doRequest(action, 'HTTPS', 'POST', '2016-01-20', 'AK', query, null as never, runtime);
  const createKey = async (req: Record<string, unknown> = {}) =>
    (await kms.createKey(new $Kms.CreateKeyRequest(req))).keyMetadata;

  beforeAll(async () => {
    server = await startKms();
    kms = kmsClient(server);
    pop = popClient(server);
  });

  afterAll(async () => {
    const exit = await server.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
  });

  describe('key lifecycle', () => {
    it('CreateKey and DescribeKey return Alibaba KeyMetadata', async () => {
      const created = await createKey({ description: 'orders master key' });
      expect(created.keyId).toMatch(UUID);
      expect(created).toMatchObject({
        description: 'orders master key',
        keySpec: 'Aliyun_AES_256',
        keyUsage: 'ENCRYPT/DECRYPT',
        keyState: 'Enabled',
        origin: 'Aliyun_KMS',
        automaticRotation: 'Disabled',
      });
      expect(created.arn).toMatch(new RegExp(`^acs:kms:cn-hangzhou:\\d+:key/${created.keyId}$`));
      expect(created.creationDate).toMatch(KMS_TIME);
      expect(created.primaryKeyVersion).toMatch(UUID);

      const described = await kms.describeKey(
        new $Kms.DescribeKeyRequest({ keyId: created.keyId }),
      );
      expect(described.requestId).toMatch(UUID);
      expect(described.keyMetadata.keyId).toBe(created.keyId);
      expect(described.keyMetadata.primaryKeyVersion).toBe(created.primaryKeyVersion);
      expect(described.keyMetadata.arn).toBe(created.arn);

      // RegionId, when sent, is echoed in the ARN (pop-core sends what we give it).
      const inShanghai = await pop.request<Json>('DescribeKey', {
        KeyId: created.keyId,
        RegionId: 'cn-shanghai',
      });
      expect((inShanghai.KeyMetadata as Json).Arn).toBe(
        created.arn.replace('cn-hangzhou', 'cn-shanghai'),
      );
    });

    it('CreateKey honours KeySpec, and refuses an unknown one naming KeySpec', async () => {
      const aes128 = await createKey({ keySpec: 'Aliyun_AES_128' });
      expect(aes128.keySpec).toBe('Aliyun_AES_128');
      const rsa = await createKey({ keySpec: 'RSA_2048' });
      expect(rsa.keySpec).toBe('RSA_2048');
      await expectSdkError(
        kms.createKey(new $Kms.CreateKeyRequest({ keySpec: 'Aliyun_AES_512' })),
        'InvalidParameter',
        400,
        'KeySpec',
      );
    });

    it('ListKeys pages with TotalCount, PageNumber and PageSize', async () => {
      const mine = [await createKey(), await createKey(), await createKey()].map((k) => k.keyId);
      const all = await kms.listKeys(new $Kms.ListKeysRequest({ pageSize: 100 }));
      const ids = all.keys.key.map((k) => k.keyId);
      expect(ids).toEqual(expect.arrayContaining(mine));
      expect(all.totalCount).toBe(ids.length);
      expect(all.pageSize).toBe(100);
      expect(all.keys.key[0].keyArn).toMatch(/^acs:kms:cn-hangzhou:\d+:key\//);

      const paged: string[] = [];
      for (let page = 1; paged.length < all.totalCount; page++) {
        const res = await kms.listKeys(new $Kms.ListKeysRequest({ pageNumber: page, pageSize: 2 }));
        expect(res).toMatchObject({ pageNumber: page, pageSize: 2, totalCount: all.totalCount });
        expect(res.keys.key.length).toBeLessThanOrEqual(2);
        expect(res.keys.key.length).toBeGreaterThan(0);
        paged.push(...res.keys.key.map((k) => k.keyId));
      }
      expect(paged).toEqual(ids);
      // Past the end: an empty page, not an error.
      const beyond = await pop.request<Json>('ListKeys', { PageNumber: 1000, PageSize: 2 });
      expect(beyond.TotalCount).toBe(all.totalCount);
      expect((beyond.Keys as { Key: unknown[] }).Key).toEqual([]);
      await expectSdkError(
        kms.listKeys(new $Kms.ListKeysRequest({ pageSize: 101 })),
        'InvalidParameter',
        400,
        'PageSize',
      );
    });

    it('DisableKey refuses GenerateDataKey AND Decrypt; EnableKey restores both', async () => {
      const key = await createKey();
      const before = await kms.generateDataKey(
        new $Kms.GenerateDataKeyRequest({ keyId: key.keyId }),
      );
      await kms.disableKey(new $Kms.DisableKeyRequest({ keyId: key.keyId }));
      const described = await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId }));
      expect(described.keyMetadata.keyState).toBe('Disabled');

      await expectSdkError(
        kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId: key.keyId })),
        'Rejected.Disabled',
        409,
      );
      await expectSdkError(
        kms.decrypt(new $Kms.DecryptRequest({ ciphertextBlob: before.ciphertextBlob })),
        'Rejected.Disabled',
        409,
      );
      await expectSdkError(
        call('AdvanceGenerateDataKey', { KeyId: key.keyId, NumberOfBytes: 32 }),
        'Rejected.Disabled',
        409,
      );
      await expectSdkError(
        kms.createKeyVersion(new $Kms.CreateKeyVersionRequest({ keyId: key.keyId })),
        'Rejected.Disabled',
        409,
      );

      await kms.enableKey(new $Kms.EnableKeyRequest({ keyId: key.keyId }));
      const opened = await kms.decrypt(
        new $Kms.DecryptRequest({ ciphertextBlob: before.ciphertextBlob }),
      );
      expect(opened.plaintext).toBe(before.plaintext);
    });

    it('ScheduleKeyDeletion puts a key in PendingDeletion; CancelKeyDeletion brings it back', async () => {
      const key = await createKey();
      const blob = (
        await kms.generateDataKeyWithoutPlaintext(
          new $Kms.GenerateDataKeyWithoutPlaintextRequest({ keyId: key.keyId }),
        )
      ).ciphertextBlob;
      await expectSdkError(
        kms.scheduleKeyDeletion(
          new $Kms.ScheduleKeyDeletionRequest({ keyId: key.keyId, pendingWindowInDays: 6 }),
        ),
        'InvalidParameter',
        400,
        'PendingWindowInDays',
      );
      await expectSdkError(
        kms.scheduleKeyDeletion(new $Kms.ScheduleKeyDeletionRequest({ keyId: key.keyId })),
        'MissingParameter',
        400,
        'PendingWindowInDays',
      );
      const startedAt = Date.now();
      await kms.scheduleKeyDeletion(
        new $Kms.ScheduleKeyDeletionRequest({ keyId: key.keyId, pendingWindowInDays: 7 }),
      );
      const pending = (await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId })))
        .keyMetadata;
      expect(pending.keyState).toBe('PendingDeletion');
      expect(pending.deleteDate).toMatch(KMS_TIME);
      const deleteAt = Date.parse(pending.deleteDate);
      expect(Math.abs(deleteAt - (startedAt + 7 * 86400_000))).toBeLessThan(60_000);

      await expectSdkError(
        kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId: key.keyId })),
        'Rejected.PendingDeletion',
        409,
      );
      await expectSdkError(
        kms.decrypt(new $Kms.DecryptRequest({ ciphertextBlob: blob })),
        'Rejected.PendingDeletion',
        409,
      );
      await expectSdkError(
        kms.enableKey(new $Kms.EnableKeyRequest({ keyId: key.keyId })),
        'Rejected.PendingDeletion',
        409,
      );

      await kms.cancelKeyDeletion(new $Kms.CancelKeyDeletionRequest({ keyId: key.keyId }));
      const back = (await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId })))
        .keyMetadata;
      expect(back.keyState).toBe('Enabled');
      expect(back.deleteDate).toBeUndefined();
      const opened = await kms.decrypt(new $Kms.DecryptRequest({ ciphertextBlob: blob }));
      expect(fromB64(opened.plaintext)).toHaveLength(32);
    });

    it('UpdateRotationPolicy sets interval and next rotation; refuses intervals out of 7d..365d', async () => {
      const key = await createKey();
      await kms.updateRotationPolicy(
        new $Kms.UpdateRotationPolicyRequest({
          keyId: key.keyId,
          enableAutomaticRotation: true,
          rotationInterval: '30d',
        }),
      );
      const m = (await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId })))
        .keyMetadata;
      expect(m.automaticRotation).toBe('Enabled');
      expect(m.rotationInterval).toBe(`${30 * 86400}s`);
      expect(Date.parse(m.nextRotationDate) - Date.parse(m.lastRotationDate)).toBe(30 * 86400_000);

      for (const interval of ['6d', '366d', '604799s', '30', 'd', '1w']) {
        await expectSdkError(
          kms.updateRotationPolicy(
            new $Kms.UpdateRotationPolicyRequest({
              keyId: key.keyId,
              enableAutomaticRotation: true,
              rotationInterval: interval,
            }),
          ),
          'InvalidParameter',
          400,
          'RotationInterval',
        );
      }
      // The boundaries themselves are accepted.
      for (const interval of ['7d', '604800s', '365d']) {
        await kms.updateRotationPolicy(
          new $Kms.UpdateRotationPolicyRequest({
            keyId: key.keyId,
            enableAutomaticRotation: true,
            rotationInterval: interval,
          }),
        );
      }
      await expectSdkError(
        kms.createKey(
          new $Kms.CreateKeyRequest({ enableAutomaticRotation: true, rotationInterval: '400d' }),
        ),
        'InvalidParameter',
        400,
        'RotationInterval',
      );

      await kms.updateRotationPolicy(
        new $Kms.UpdateRotationPolicyRequest({ keyId: key.keyId, enableAutomaticRotation: false }),
      );
      const off = (await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId })))
        .keyMetadata;
      expect(off.automaticRotation).toBe('Disabled');
      expect(off.nextRotationDate).toBeUndefined();
    });
  });

  describe('key versions and the Standard/Advance rule', () => {
    it('after CreateKeyVersion, the Standard flow keeps the INITIAL version and Advance uses the new PRIMARY', async () => {
      const key = await createKey();
      const initial = key.primaryKeyVersion;
      const context = { app: 'orders', tenant: 't1' };
      const oldStandard = await kms.generateDataKey(
        new $Kms.GenerateDataKeyRequest({ keyId: key.keyId, encryptionContext: context }),
      );
      expect(oldStandard.keyVersionId).toBe(initial);
      const aad = b64(Buffer.from('orders/t1'));
      const oldAdvance = await call('AdvanceGenerateDataKey', {
        KeyId: key.keyId,
        NumberOfBytes: 32,
        Aad: aad,
      });
      expect(oldAdvance.KeyVersionId).toBe(initial);

      const rotated = await kms.createKeyVersion(
        new $Kms.CreateKeyVersionRequest({ keyId: key.keyId }),
      );
      const primary = rotated.keyVersion.keyVersionId;
      expect(rotated.keyVersion.keyId).toBe(key.keyId);
      expect(primary).toMatch(UUID);
      expect(primary).not.toBe(initial);
      expect(rotated.keyVersion.creationDate).toMatch(KMS_TIME);

      const described = await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId }));
      expect(described.keyMetadata.primaryKeyVersion).toBe(primary);

      const standard = await kms.generateDataKey(
        new $Kms.GenerateDataKeyRequest({ keyId: key.keyId, encryptionContext: context }),
      );
      expect(standard.keyVersionId).toBe(initial);
      const withoutPlaintext = await kms.generateDataKeyWithoutPlaintext(
        new $Kms.GenerateDataKeyWithoutPlaintextRequest({ keyId: key.keyId }),
      );
      expect(withoutPlaintext.keyVersionId).toBe(initial);
      const encrypted = await kms.encrypt(
        new $Kms.EncryptRequest({ keyId: key.keyId, plaintext: b64(Buffer.from('hi')) }),
      );
      expect(encrypted.keyVersionId).toBe(initial);

      const advance = await call('AdvanceGenerateDataKey', {
        KeyId: key.keyId,
        NumberOfBytes: 32,
        Aad: aad,
      });
      expect(advance.KeyVersionId).toBe(primary);
      const advanceNoPlain = await call('AdvanceGenerateDataKeyWithoutPlaintext', {
        KeyId: key.keyId,
        NumberOfBytes: 16,
      });
      expect(advanceNoPlain.KeyVersionId).toBe(primary);
      const advanceEncrypted = await call('AdvanceEncrypt', {
        KeyId: key.keyId,
        Plaintext: b64(Buffer.from('hi')),
      });
      expect(advanceEncrypted.KeyVersionId).toBe(primary);

      // Every blob, old or new, still decrypts and names the version that wrapped it.
      const openedOld = await kms.decrypt(
        new $Kms.DecryptRequest({
          ciphertextBlob: oldStandard.ciphertextBlob,
          encryptionContext: context,
        }),
      );
      expect(openedOld).toMatchObject({ plaintext: oldStandard.plaintext, keyVersionId: initial });
      const openedOldAdvance = await call('AdvanceDecrypt', {
        CiphertextBlob: oldAdvance.CiphertextBlob,
        Aad: aad,
      });
      expect(openedOldAdvance).toMatchObject({
        Plaintext: oldAdvance.Plaintext,
        KeyVersionId: initial,
      });
      const openedNew = await call('AdvanceDecrypt', {
        CiphertextBlob: advance.CiphertextBlob,
        Aad: aad,
      });
      expect(openedNew).toMatchObject({
        Plaintext: advance.Plaintext,
        KeyVersionId: primary,
        KeyId: key.keyId,
        Algorithm: 'AES_GCM',
      });
    });

    it('ListKeyVersions pages; DescribeKeyVersion describes one version', async () => {
      const key = await createKey();
      const v2 = (
        await kms.createKeyVersion(new $Kms.CreateKeyVersionRequest({ keyId: key.keyId }))
      ).keyVersion.keyVersionId;
      const v3 = (
        await kms.createKeyVersion(new $Kms.CreateKeyVersionRequest({ keyId: key.keyId }))
      ).keyVersion.keyVersionId;
      const all = await kms.listKeyVersions(new $Kms.ListKeyVersionsRequest({ keyId: key.keyId }));
      expect(all).toMatchObject({ totalCount: 3, pageNumber: 1, pageSize: 10 });
      expect(all.keyVersions.keyVersion.map((v) => v.keyVersionId)).toEqual([
        key.primaryKeyVersion,
        v2,
        v3,
      ]);
      for (const v of all.keyVersions.keyVersion) {
        expect(v.keyId).toBe(key.keyId);
        expect(v.creationDate).toMatch(KMS_TIME);
      }
      const page2 = await kms.listKeyVersions(
        new $Kms.ListKeyVersionsRequest({ keyId: key.keyId, pageNumber: 2, pageSize: 2 }),
      );
      expect(page2).toMatchObject({ totalCount: 3, pageNumber: 2, pageSize: 2 });
      expect(page2.keyVersions.keyVersion.map((v) => v.keyVersionId)).toEqual([v3]);

      const one = await kms.describeKeyVersion(
        new $Kms.DescribeKeyVersionRequest({ keyId: key.keyId, keyVersionId: v2 }),
      );
      expect(one.keyVersion).toMatchObject({ keyId: key.keyId, keyVersionId: v2 });
      await expectSdkError(
        kms.describeKeyVersion(
          new $Kms.DescribeKeyVersionRequest({ keyId: key.keyId, keyVersionId: 'nope' }),
        ),
        'Forbidden.KeyVersionNotFound',
        404,
      );
      await expectSdkError(
        kms.listKeyVersions(new $Kms.ListKeyVersionsRequest({ keyId: 'no-such-key' })),
        'Forbidden.KeyNotFound',
        404,
      );
    });
  });

  describe('aliases', () => {
    it('CreateAlias/UpdateAlias/DeleteAlias/ListAliases/ListAliasesByKeyId; an alias resolves to the real KeyId', async () => {
      const a = await createKey();
      const b = await createKey();
      const name = `alias/orders-${randomBytes(3).toString('hex')}`;
      await kms.createAlias(new $Kms.CreateAliasRequest({ aliasName: name, keyId: a.keyId }));
      await kms.createAlias(
        new $Kms.CreateAliasRequest({ aliasName: `${name}/second`, keyId: a.keyId }),
      );

      const viaAlias = await kms.generateDataKey(
        new $Kms.GenerateDataKeyRequest({ keyId: name, keySpec: 'AES_128' }),
      );
      expect(viaAlias.keyId).toBe(a.keyId);
      expect(fromB64(viaAlias.plaintext)).toHaveLength(16);
      const described = await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: name }));
      expect(described.keyMetadata.keyId).toBe(a.keyId);
      const arnAlias = `acs:kms:cn-hangzhou:${a.arn.split(':')[3]}:${name}`;
      const viaArn = await kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: arnAlias }));
      expect(viaArn.keyMetadata.keyId).toBe(a.keyId);

      const listed = await kms.listAliases(new $Kms.ListAliasesRequest({ pageSize: 100 }));
      expect(listed.totalCount).toBe(listed.aliases.alias.length);
      expect(listed.aliases.alias).toEqual(
        expect.arrayContaining([{ aliasName: name, keyId: a.keyId, aliasArn: arnAlias }]),
      );
      const byA = await kms.listAliasesByKeyId(
        new $Kms.ListAliasesByKeyIdRequest({ keyId: a.keyId, pageSize: 1 }),
      );
      expect(byA).toMatchObject({ totalCount: 2, pageNumber: 1, pageSize: 1 });
      expect(byA.aliases.alias).toHaveLength(1);
      expect(byA.aliases.alias[0].keyId).toBe(a.keyId);

      await kms.updateAlias(new $Kms.UpdateAliasRequest({ aliasName: name, keyId: b.keyId }));
      const moved = await kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId: name }));
      expect(moved.keyId).toBe(b.keyId);
      const byB = await kms.listAliasesByKeyId(
        new $Kms.ListAliasesByKeyIdRequest({ keyId: b.keyId }),
      );
      expect(byB.aliases.alias.map((x) => x.aliasName)).toEqual([name]);
      // A blob made through the alias before the move still decrypts (it names its key).
      const opened = await kms.decrypt(
        new $Kms.DecryptRequest({ ciphertextBlob: viaAlias.ciphertextBlob }),
      );
      expect(opened).toMatchObject({ keyId: a.keyId, plaintext: viaAlias.plaintext });

      await expectSdkError(
        kms.createAlias(new $Kms.CreateAliasRequest({ aliasName: name, keyId: a.keyId })),
        'Forbidden.AliasExists',
        409,
      );
      await kms.deleteAlias(new $Kms.DeleteAliasRequest({ aliasName: name }));
      await expectSdkError(
        kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: name })),
        'Forbidden.AliasNotFound',
        404,
      );
      await expectSdkError(
        kms.deleteAlias(new $Kms.DeleteAliasRequest({ aliasName: name })),
        'Forbidden.AliasNotFound',
        404,
      );
      await expectSdkError(
        kms.updateAlias(new $Kms.UpdateAliasRequest({ aliasName: name, keyId: a.keyId })),
        'Forbidden.AliasNotFound',
        404,
      );
      await expectSdkError(
        kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId: 'alias/never-made' })),
        'Forbidden.AliasNotFound',
        404,
      );
    });

    it.each([
      'orders',
      'alias/',
      'alias/has space',
      'alias/acs',
      'alias/acs/kms',
      'alias/ünicode',
      `alias/${'x'.repeat(256)}`,
    ])('CreateAlias refuses the name %j naming AliasName', async (aliasName) => {
      const key = await createKey();
      await expectSdkError(
        kms.createAlias(new $Kms.CreateAliasRequest({ aliasName, keyId: key.keyId })),
        'InvalidParameter',
        400,
        'AliasName',
      );
    });

    it('CreateAlias on an unknown key is Forbidden.KeyNotFound', async () => {
      await expectSdkError(
        kms.createAlias(
          new $Kms.CreateAliasRequest({ aliasName: 'alias/dangling', keyId: 'no-such-key' }),
        ),
        'Forbidden.KeyNotFound',
        404,
      );
    });
  });

  describe('data keys and envelope operations', () => {
    let keyId: string;
    beforeAll(async () => {
      keyId = (await createKey()).keyId;
    });

    it('GenerateDataKey: KeySpec sizes, NumberOfBytes wins, default 32, decrypt gives the same plaintext', async () => {
      const cases: [Record<string, unknown>, number][] = [
        [{}, 32],
        [{ keySpec: 'AES_256' }, 32],
        [{ keySpec: 'AES_128' }, 16],
        [{ keySpec: 'AES_128', numberOfBytes: 64 }, 64],
        [{ numberOfBytes: 1 }, 1],
        [{ numberOfBytes: 1024 }, 1024],
      ];
      for (const [extra, bytes] of cases) {
        const r = await kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId, ...extra }));
        expect(r.keyId).toBe(keyId);
        expect(fromB64(r.plaintext)).toHaveLength(bytes);
        expect(r.requestId).toMatch(UUID);
        const opened = await kms.decrypt(
          new $Kms.DecryptRequest({ ciphertextBlob: r.ciphertextBlob }),
        );
        expect(opened).toMatchObject({
          plaintext: r.plaintext,
          keyId,
          keyVersionId: r.keyVersionId,
        });
      }
    });

    it('EncryptionContext binds the blob, in any key order, across both SDKs', async () => {
      const context = { app: 'orders api*', tenant: 'ünï & co', z: '=&%' };
      const r = await kms.generateDataKey(
        new $Kms.GenerateDataKeyRequest({ keyId, encryptionContext: context }),
      );
      const reordered = { z: '=&%', tenant: 'ünï & co', app: 'orders api*' };
      const opened = await kms.decrypt(
        new $Kms.DecryptRequest({ ciphertextBlob: r.ciphertextBlob, encryptionContext: reordered }),
      );
      expect(opened.plaintext).toBe(r.plaintext);
      // pop-core sends EncryptionContext as a JSON string (GET and POST).
      for (const method of ['GET', 'POST']) {
        const viaPop = await pop.request<Json>(
          'Decrypt',
          { CiphertextBlob: r.ciphertextBlob, EncryptionContext: JSON.stringify(reordered) },
          { method },
        );
        expect(viaPop.Plaintext).toBe(r.plaintext);
      }
      const popMade = await pop.request<Json>(
        'GenerateDataKey',
        { KeyId: keyId, EncryptionContext: JSON.stringify(context) },
        { method: 'POST' },
      );
      const openedPopMade = await kms.decrypt(
        new $Kms.DecryptRequest({
          ciphertextBlob: popMade.CiphertextBlob as string,
          encryptionContext: context,
        }),
      );
      expect(openedPopMade.plaintext).toBe(popMade.Plaintext);

      // Wrong, partial or missing context: InvalidParameter on CiphertextBlob.
      for (const wrong of [{ ...context, app: 'billing' }, { app: 'orders api*' }, undefined]) {
        await expectSdkError(
          kms.decrypt(
            new $Kms.DecryptRequest({ ciphertextBlob: r.ciphertextBlob, encryptionContext: wrong }),
          ),
          'InvalidParameter',
          400,
          'CiphertextBlob',
        );
      }
    });

    it('every EncryptionContext key is bound, even __proto__ and integer-like keys', async () => {
      for (const json of ['{"__proto__":"x"}', '{"constructor":"y"}', '{"10":"a","2":"b"}']) {
        const made = await pop.request<Json>('GenerateDataKey', {
          KeyId: keyId,
          EncryptionContext: json,
        });
        // The same context opens it, JSON or flattened...
        const opened = await pop.request<Json>('Decrypt', {
          CiphertextBlob: made.CiphertextBlob,
          EncryptionContext: json,
        });
        expect(opened.Plaintext).toBe(made.Plaintext);
        // ...but no context (or another one) does not.
        await expectPopError(
          pop.request('Decrypt', { CiphertextBlob: made.CiphertextBlob }),
          'InvalidParameter',
          400,
          'CiphertextBlob',
        );
      }
      // Flattened (kms20160120 style) __proto__ is bound too.
      const flat = await signedRequest(server.url, server, 'GenerateDataKey', {
        KeyId: keyId,
        'EncryptionContext.__proto__': 'x',
      });
      expect(flat.status).toBe(200);
      const unbound = await signedRequest(server.url, server, 'Decrypt', {
        CiphertextBlob: flat.json?.CiphertextBlob as string,
      });
      expectErrorBody(unbound, 400, 'InvalidParameter');
      // The canonical form sorts keys as strings ("10" before "2"), so a client that
      // sorts keys itself can pass it as Aad to AdvanceDecrypt.
      const numeric = await pop.request<Json>('GenerateDataKey', {
        KeyId: keyId,
        EncryptionContext: '{"2":"b","10":"a"}',
      });
      const viaAad = await call('AdvanceDecrypt', {
        CiphertextBlob: numeric.CiphertextBlob,
        Aad: b64(Buffer.from('{"10":"a","2":"b"}')),
      });
      expect(viaAad.Plaintext).toBe(numeric.Plaintext);
    });

    it('GenerateDataKeyWithoutPlaintext returns no Plaintext; Decrypt recovers the key', async () => {
      const r = await kms.generateDataKeyWithoutPlaintext(
        new $Kms.GenerateDataKeyWithoutPlaintextRequest({
          keyId,
          keySpec: 'AES_128',
          encryptionContext: { app: 'x' },
        }),
      );
      expect(r).not.toHaveProperty('plaintext');
      expect(r.keyId).toBe(keyId);
      const raw = await pop.request<Json>('GenerateDataKeyWithoutPlaintext', { KeyId: keyId });
      expect(Object.keys(raw).sort()).toEqual(
        ['CiphertextBlob', 'KeyId', 'KeyVersionId', 'RequestId'].sort(),
      );
      const opened = await kms.decrypt(
        new $Kms.DecryptRequest({
          ciphertextBlob: r.ciphertextBlob,
          encryptionContext: { app: 'x' },
        }),
      );
      expect(fromB64(opened.plaintext)).toHaveLength(16);
    });

    it('AdvanceGenerateDataKey returns Algorithm and the Iv inside the blob; AdvanceDecrypt needs the Aad', async () => {
      const aad = b64(Buffer.from('namespace/orders'));
      const r = await call('AdvanceGenerateDataKey', { KeyId: keyId, NumberOfBytes: 48, Aad: aad });
      expect(r).toMatchObject({ KeyId: keyId, Algorithm: 'AES_GCM' });
      expect(fromB64(r.Plaintext)).toHaveLength(48);
      const iv = fromB64(r.Iv);
      expect(iv).toHaveLength(12);
      const blob = fromB64(r.CiphertextBlob);
      expect(blob.subarray(0, 36).toString('latin1')).toBe(r.KeyVersionId);
      expect(blob.subarray(37, 49).equals(iv)).toBe(true);

      const opened = await call('AdvanceDecrypt', { CiphertextBlob: r.CiphertextBlob, Aad: aad });
      expect(opened).toMatchObject({
        KeyId: keyId,
        KeyVersionId: r.KeyVersionId,
        Plaintext: r.Plaintext,
        Algorithm: 'AES_GCM',
      });
      await expectSdkError(
        call('AdvanceDecrypt', { CiphertextBlob: r.CiphertextBlob, Aad: b64(Buffer.from('x')) }),
        'InvalidParameter',
        400,
        'CiphertextBlob',
      );
      await expectSdkError(
        call('AdvanceDecrypt', { CiphertextBlob: r.CiphertextBlob }),
        'InvalidParameter',
        400,
        'CiphertextBlob',
      );
      // Advance blobs refuse the Standard Decrypt.
      await expectSdkError(
        kms.decrypt(new $Kms.DecryptRequest({ ciphertextBlob: r.CiphertextBlob })),
        'InvalidParameter',
        400,
        'CiphertextBlob',
      );
      // pop-core speaks the Advance actions too.
      const viaPop = await pop.request<Json>(
        'AdvanceDecrypt',
        { CiphertextBlob: r.CiphertextBlob, Aad: aad },
        { method: 'POST' },
      );
      expect(viaPop.Plaintext).toBe(r.Plaintext);
    });

    it('AdvanceGenerateDataKeyWithoutPlaintext returns no Plaintext and AdvanceDecrypt opens it', async () => {
      const r = await call('AdvanceGenerateDataKeyWithoutPlaintext', {
        KeyId: keyId,
        NumberOfBytes: 32,
      });
      expect(r).not.toHaveProperty('Plaintext');
      expect(r).toMatchObject({ KeyId: keyId, Algorithm: 'AES_GCM' });
      const opened = await call('AdvanceDecrypt', { CiphertextBlob: r.CiphertextBlob });
      expect(fromB64(opened.Plaintext)).toHaveLength(32);
      await expectSdkError(
        call('AdvanceGenerateDataKeyWithoutPlaintext', { KeyId: keyId }),
        'MissingParameter',
        400,
        'NumberOfBytes',
      );
    });

    it('AdvanceDecrypt opens a Standard blob when Aad is the canonical JSON of its EncryptionContext', async () => {
      const context = { tenant: 't1', app: 'orders' };
      const r = await kms.generateDataKey(
        new $Kms.GenerateDataKeyRequest({ keyId, encryptionContext: context }),
      );
      const canonical = JSON.stringify({ app: 'orders', tenant: 't1' });
      const opened = await call('AdvanceDecrypt', {
        CiphertextBlob: r.ciphertextBlob,
        Aad: b64(Buffer.from(canonical)),
      });
      expect(opened.Plaintext).toBe(r.plaintext);
      await expectSdkError(
        call('AdvanceDecrypt', {
          CiphertextBlob: r.ciphertextBlob,
          Aad: b64(Buffer.from(JSON.stringify(context))),
        }),
        'InvalidParameter',
        400,
      );
    });

    it('Encrypt/Decrypt and AdvanceEncrypt/AdvanceDecrypt round-trip caller data', async () => {
      const data = randomBytes(6 * 1024);
      const enc = await kms.encrypt(
        new $Kms.EncryptRequest({ keyId, plaintext: b64(data), encryptionContext: { k: 'v' } }),
      );
      expect(enc.keyId).toBe(keyId);
      const dec = await kms.decrypt(
        new $Kms.DecryptRequest({
          ciphertextBlob: enc.ciphertextBlob,
          encryptionContext: { k: 'v' },
        }),
      );
      expect(fromB64(dec.plaintext).equals(data)).toBe(true);

      const aad = b64(Buffer.from('aad'));
      const aenc = await call('AdvanceEncrypt', { KeyId: keyId, Plaintext: b64(data), Aad: aad });
      expect(aenc).toMatchObject({ KeyId: keyId, Algorithm: 'AES_GCM' });
      expect(fromB64(aenc.Iv)).toHaveLength(12);
      const adec = await call('AdvanceDecrypt', { CiphertextBlob: aenc.CiphertextBlob, Aad: aad });
      expect(fromB64(adec.Plaintext).equals(data)).toBe(true);

      await expectSdkError(
        kms.encrypt(new $Kms.EncryptRequest({ keyId, plaintext: b64(randomBytes(6 * 1024 + 1)) })),
        'InvalidParameter',
        400,
        'Plaintext',
      );
      await expectSdkError(
        kms.encrypt(new $Kms.EncryptRequest({ keyId, plaintext: 'not base64!' })),
        'InvalidParameter',
        400,
        'Plaintext',
      );
    });

    it('ReEncrypt re-wraps under the destination primary version without returning plaintext', async () => {
      const source = await createKey();
      const destination = await createKey();
      const destPrimary = (
        await kms.createKeyVersion(new $Kms.CreateKeyVersionRequest({ keyId: destination.keyId }))
      ).keyVersion.keyVersionId;
      const made = await kms.generateDataKey(
        new $Kms.GenerateDataKeyRequest({ keyId: source.keyId, encryptionContext: { s: '1' } }),
      );
      const re = await call('ReEncrypt', {
        CiphertextBlob: made.ciphertextBlob,
        SourceEncryptionContext: { s: '1' },
        DestinationKeyId: destination.keyId,
        DestinationEncryptionContext: { d: '2' },
      });
      expect(re).not.toHaveProperty('Plaintext');
      expect(re).toMatchObject({
        KeyId: destination.keyId,
        KeyVersionId: destPrimary,
        SourceKeyId: source.keyId,
        SourceKeyVersionId: made.keyVersionId,
      });
      expect(re.CiphertextBlob).not.toBe(made.ciphertextBlob);
      const opened = await kms.decrypt(
        new $Kms.DecryptRequest({
          ciphertextBlob: re.CiphertextBlob,
          encryptionContext: { d: '2' },
        }),
      );
      expect(opened).toMatchObject({ plaintext: made.plaintext, keyId: destination.keyId });
      await expectSdkError(
        kms.decrypt(
          new $Kms.DecryptRequest({
            ciphertextBlob: re.CiphertextBlob,
            encryptionContext: { s: '1' },
          }),
        ),
        'InvalidParameter',
        400,
      );
      // Wrong source context: nothing is re-wrapped.
      await expectSdkError(
        call('ReEncrypt', {
          CiphertextBlob: made.ciphertextBlob,
          DestinationKeyId: destination.keyId,
        }),
        'InvalidParameter',
        400,
        'CiphertextBlob',
      );
      await expectSdkError(
        call('ReEncrypt', { CiphertextBlob: made.ciphertextBlob, DestinationKeyId: 'nope' }),
        'Forbidden.KeyNotFound',
        404,
      );
      // pop-core, JSON contexts, through an alias.
      const aliasName = `alias/re-${randomBytes(3).toString('hex')}`;
      await kms.createAlias(new $Kms.CreateAliasRequest({ aliasName, keyId: destination.keyId }));
      const viaPop = await pop.request<Json>(
        'ReEncrypt',
        {
          CiphertextBlob: made.ciphertextBlob,
          SourceEncryptionContext: JSON.stringify({ s: '1' }),
          DestinationKeyId: aliasName,
        },
        { method: 'POST' },
      );
      expect(viaPop.KeyId).toBe(destination.keyId);
    });
  });

  describe('errors through the SDKs', () => {
    let keyId: string;
    beforeAll(async () => {
      keyId = (await createKey()).keyId;
    });

    it('MissingParameter names the parameter', async () => {
      await expectSdkError(
        kms.generateDataKey(new $Kms.GenerateDataKeyRequest({})),
        'MissingParameter',
        400,
        'KeyId',
      );
      await expectSdkError(
        kms.decrypt(new $Kms.DecryptRequest({})),
        'MissingParameter',
        400,
        'CiphertextBlob',
      );
      await expectPopError(
        pop.request('CreateAlias', { KeyId: keyId }),
        'MissingParameter',
        400,
        'AliasName',
      );
    });

    it('InvalidParameter names KeySpec and NumberOfBytes (0, 1025, non-integers)', async () => {
      await expectSdkError(
        kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId, keySpec: 'AES_512' })),
        'InvalidParameter',
        400,
        'The specified parameter KeySpec is not valid.',
      );
      for (const n of [0, 1025]) {
        await expectSdkError(
          kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId, numberOfBytes: n })),
          'InvalidParameter',
          400,
          'NumberOfBytes',
        );
        await expectSdkError(
          call('AdvanceGenerateDataKey', { KeyId: keyId, NumberOfBytes: n }),
          'InvalidParameter',
          400,
          'NumberOfBytes',
        );
      }
      for (const n of ['1e3', '-1', '0x10', '32.0', ' 32']) {
        await expectPopError(
          pop.request('GenerateDataKey', { KeyId: keyId, NumberOfBytes: n }),
          'InvalidParameter',
          400,
          'NumberOfBytes',
        );
      }
    });

    it('Forbidden.KeyNotFound for unknown keys', async () => {
      await expectSdkError(
        kms.describeKey(
          new $Kms.DescribeKeyRequest({ keyId: 'b1b1b1b1-0000-4000-8000-000000000000' }),
        ),
        'Forbidden.KeyNotFound',
        404,
      );
      await expectSdkError(
        kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId: 'nope' })),
        'Forbidden.KeyNotFound',
        404,
      );
      await expectPopError(
        pop.request('EnableKey', { KeyId: 'nope' }),
        'Forbidden.KeyNotFound',
        404,
      );
    });

    it('Forbidden.OnlySymmetricKeySupported for Advance calls on an RSA_2048 key', async () => {
      const rsa = await createKey({ keySpec: 'RSA_2048' });
      await expectSdkError(
        call('AdvanceGenerateDataKey', { KeyId: rsa.keyId, NumberOfBytes: 32 }),
        'Forbidden.OnlySymmetricKeySupported',
        404,
      );
      await expectSdkError(
        call('AdvanceEncrypt', { KeyId: rsa.keyId, Plaintext: b64(Buffer.from('x')) }),
        'Forbidden.OnlySymmetricKeySupported',
        404,
      );
      await expectSdkError(
        kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId: rsa.keyId })),
        'Forbidden.OnlySymmetricKeySupported',
        404,
      );
    });

    it('DryRun=true answers DryRunOperation and generates nothing', async () => {
      await expectSdkError(
        call('GenerateDataKeyWithoutPlaintext', { KeyId: keyId, DryRun: 'true' }),
        'DryRunOperation',
        400,
      );
      await expectSdkError(
        call('AdvanceGenerateDataKey', { KeyId: keyId, NumberOfBytes: 32, DryRun: true }),
        'DryRunOperation',
        400,
      );
      const made = await kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId }));
      await expectPopError(
        pop.request('Decrypt', { CiphertextBlob: made.ciphertextBlob, DryRun: 'true' }),
        'DryRunOperation',
        400,
      );
      // DryRun still validates first: a bad parameter wins over DryRunOperation.
      await expectSdkError(
        call('GenerateDataKey', { KeyId: 'nope', DryRun: 'true' }),
        'Forbidden.KeyNotFound',
        404,
      );
      await expectSdkError(
        call('GenerateDataKey', { KeyId: keyId, DryRun: 'maybe' }),
        'InvalidParameter',
        400,
        'DryRun',
      );
    });

    it('a tampered, truncated or garbage CiphertextBlob is InvalidParameter', async () => {
      const made = await kms.generateDataKey(new $Kms.GenerateDataKeyRequest({ keyId }));
      const blob = fromB64(made.ciphertextBlob);
      const variants: Buffer[] = [];
      for (const at of [36, 40, 60, blob.length - 1]) {
        const t = Buffer.from(blob);
        t[at] ^= 0x01;
        variants.push(t);
      }
      variants.push(blob.subarray(0, blob.length - 1), blob.subarray(0, 36), randomBytes(80));
      variants.push(Buffer.concat([blob, Buffer.from([0])]));
      for (const v of variants) {
        await expectSdkError(
          kms.decrypt(new $Kms.DecryptRequest({ ciphertextBlob: b64(v) })),
          'InvalidParameter',
          400,
          'CiphertextBlob',
        );
      }
      await expectSdkError(
        kms.decrypt(new $Kms.DecryptRequest({ ciphertextBlob: '!!!not-base64!!!' })),
        'InvalidParameter',
        400,
        'CiphertextBlob',
      );
    });

    it('SignatureDoesNotMatch with a wrong secret; InvalidAccessKeyId.NotFound with an unknown id', async () => {
      await expectSdkError(
        kmsClient(server, { secret: 'wrong-secret' }).describeKey(
          new $Kms.DescribeKeyRequest({ keyId }),
        ),
        'SignatureDoesNotMatch',
        400,
      );
      await expectPopError(
        popClient(server, { secret: 'wrong-secret' }).request('DescribeKey', { KeyId: keyId }),
        'SignatureDoesNotMatch',
        400,
      );
      await expectSdkError(
        kmsClient(server, { id: 'someone-else' }).describeKey(
          new $Kms.DescribeKeyRequest({ keyId }),
        ),
        'InvalidAccessKeyId.NotFound',
        404,
      );
      await expectPopError(
        popClient(server, { id: 'someone-else' }).request('DescribeKey', { KeyId: keyId }),
        'InvalidAccessKeyId.NotFound',
        404,
      );
    });

    it('IllegalTimestamp outside 15 minutes; SignatureNonceUsed on a replay', async () => {
      const old = kmsTimestamp(new Date(Date.now() - 16 * 60_000));
      expectErrorBody(
        await signedRequest(
          server.url,
          server,
          'DescribeKey',
          { KeyId: keyId },
          { timestamp: old },
        ),
        400,
        'IllegalTimestamp',
      );
      const future = kmsTimestamp(new Date(Date.now() + 16 * 60_000));
      expectErrorBody(
        await signedRequest(
          server.url,
          server,
          'DescribeKey',
          { KeyId: keyId },
          { timestamp: future, method: 'POST' },
        ),
        400,
        'IllegalTimestamp',
      );
      const nonce = `nonce-${randomBytes(8).toString('hex')}`;
      const first = await signedRequest(
        server.url,
        server,
        'DescribeKey',
        { KeyId: keyId },
        { nonce },
      );
      expect(first.status).toBe(200);
      expect((first.json?.KeyMetadata as Json).KeyId).toBe(keyId);
      expectErrorBody(
        await signedRequest(server.url, server, 'DescribeKey', { KeyId: keyId }, { nonce }),
        400,
        'SignatureNonceUsed',
      );
    });

    it('every error body has Code, Message, RequestId and a non-2xx status', async () => {
      const cases: [Promise<RawResponse>, number, string][] = [
        [signedRequest(server.url, server, 'DescribeKey', {}), 400, 'MissingParameter'],
        [
          signedRequest(server.url, server, 'DescribeKey', { KeyId: 'x' }),
          404,
          'Forbidden.KeyNotFound',
        ],
        [signedRequest(server.url, server, 'NoSuchAction', {}), 404, 'InvalidAction.NotFound'],
        [
          signedRequest(server.url, server, 'DescribeKey', { KeyId: keyId }, { secret: 'bad' }),
          400,
          'SignatureDoesNotMatch',
        ],
        [
          signedRequest(server.url, { ...server, accessKeyId: 'nobody' }, 'DescribeKey', {
            KeyId: keyId,
          }),
          404,
          'InvalidAccessKeyId.NotFound',
        ],
        [
          signedRequest(server.url, server, 'GenerateDataKey', {
            KeyId: keyId,
            NumberOfBytes: '0',
          }),
          400,
          'InvalidParameter',
        ],
      ];
      for (const [pending, status, code] of cases) {
        const res = await pending;
        expectErrorBody(res, status, code);
        expect(res.headers['content-type']).toMatch(/^application\/json/);
        expect(res.headers['x-acs-request-id']).toBe(res.json?.RequestId);
      }
    });
    it('requests refused by the HTTP parser still get an Alibaba error body', async () => {
      const query = `Action=DescribeKey&KeyId=${'k'.repeat(70 * 1024)}`;
      expectErrorBody(await rawRequest(server.url, { query }), 431, 'RequestHeaderFieldsTooLarge');
      expectErrorBody(
        await rawRequest(server.url, {
          query: 'Action=x',
          headers: { 'x-big': 'h'.repeat(70 * 1024) },
        }),
        431,
        'RequestHeaderFieldsTooLarge',
      );
      expectErrorBody(await rawRequest(server.url, { method: 'FOO' }), 400, 'InvalidRequest');
      expectErrorBody(
        await rawRequest(server.url, { query: 'Action=DescribeKey&KeyId=\u00ff\u00fe' }),
        400,
        'InvalidRequest',
      );
      // The server is still serving afterwards.
      const after = await signedRequest(server.url, server, 'ListKeys', {});
      expect(after.status).toBe(200);
    });
  });

  describe('XML format', () => {
    it('answers Format=XML with an <ActionResponse> document and <Error> for errors', async () => {
      const key = await createKey({ description: 'a <b> & "c"' });
      const ok = await signedRequest(server.url, server, 'DescribeKey', {
        KeyId: key.keyId,
        Format: 'XML',
      });
      expect(ok.status).toBe(200);
      expect(ok.headers['content-type']).toMatch(/^application\/xml/);
      expect(ok.text).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<DescribeKeyResponse>/);
      expect(ok.text).toContain(`<KeyId>${key.keyId}</KeyId>`);
      expect(ok.text).toMatch(/<RequestId>[0-9a-f-]{36}<\/RequestId>/);
      expect(ok.text).toContain('<Description>a &#60;b&#62; &#38; &#34;c&#34;</Description>');

      const versions = await signedRequest(server.url, server, 'ListKeyVersions', {
        KeyId: key.keyId,
        Format: 'xml',
      });
      expect(versions.text).toContain(
        `<KeyVersions><KeyVersion><KeyId>${key.keyId}</KeyId><KeyVersionId>${key.primaryKeyVersion}</KeyVersionId>`,
      );
      expect(versions.text).toContain('<TotalCount>1</TotalCount>');

      const err = await signedRequest(
        server.url,
        server,
        'DescribeKey',
        { KeyId: 'nope', Format: 'XML' },
        { method: 'POST' },
      );
      expect(err.status).toBe(404);
      expect(err.text).toMatch(/<Error><RequestId>[0-9a-f-]{36}<\/RequestId>/);
      expect(err.text).toContain('<Code>Forbidden.KeyNotFound</Code>');
      expect(err.text).toContain('<Message>');

      // pop-core sends Format=XML and receives the XML document, but always JSON.parses the
      // answer (json-bigint throws a plain {name: 'SyntaxError', text} object).
      await expect(
        pop.request('DescribeKey', { KeyId: key.keyId, Format: 'XML' }),
      ).rejects.toMatchObject({
        name: 'SyntaxError',
        text: expect.stringContaining(`<DescribeKeyResponse>`),
      });
    });
  });
});

describe('rate limiting (--rate-limit 2)', () => {
  it('answers a burst over the limit with 429 Rejected.Throttling', async () => {
    const server = await startKms({ args: ['--rate-limit', '2'] });
    const kms = kmsClient(server);
    const key = (await kms.createKey(new $Kms.CreateKeyRequest({}))).keyMetadata;
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () =>
        kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId })),
      ),
    );
    const ok = results.filter((r) => r.status === 'fulfilled');
    const throttled = results.filter(
      (r): r is PromiseRejectedResult =>
        r.status === 'rejected' && (r.reason as SdkError).code === 'Rejected.ThrottlingError',
    );
    expect(ok.length).toBeGreaterThanOrEqual(1);
    expect(ok.length).toBeLessThanOrEqual(3);
    expect(throttled.length).toBe(results.length - ok.length);
    expect((throttled[0].reason as SdkError).message).toContain('code: 429,');
    // Per operation: another action still has its own budget.
    await expect(kms.listKeys(new $Kms.ListKeysRequest({}))).resolves.toMatchObject({
      totalCount: 1,
    });
    // And the bucket refills.
    await new Promise((r) => setTimeout(r, 1100));
    await expect(
      kms.describeKey(new $Kms.DescribeKeyRequest({ keyId: key.keyId })),
    ).resolves.toBeDefined();
    await server.stop();
  });
});

describe('HTTPS (--tls-cert/--tls-key)', () => {
  it('serves signed calls over TLS to pop-core given the CA', async () => {
    const { cert, key } = addressCertificate(makeTempDir('datakey-tls-'));
    const server = await startKms({ args: ['--tls-cert', cert, '--tls-key', key] });
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const agent = new https.Agent({ ca: readFileSync(cert) });
    const pop = new RPCClient({
      endpoint: server.url,
      apiVersion: '2016-01-20',
      accessKeyId: server.accessKeyId,
      accessKeySecret: server.accessKeySecret,
      opts: { agent },
    });
    const created = await pop.request<{ KeyMetadata: { KeyId: string } }>(
      'CreateKey',
      {},
      {
        method: 'POST',
      },
    );
    const made = await pop.request<Json>('GenerateDataKey', {
      KeyId: created.KeyMetadata.KeyId,
    });
    const opened = await pop.request<Json>(
      'Decrypt',
      { CiphertextBlob: made.CiphertextBlob },
      { method: 'POST' },
    );
    expect(opened.Plaintext).toBe(made.Plaintext);

    // Without the CA the self-signed certificate is refused: TLS is real.
    const untrusting = popClient(server);
    await expect(untrusting.request('ListKeys', {})).rejects.toThrow(/self[- ]signed/i);
    agent.destroy();
    await server.stop();
  });
});

describe('CLI contract of `kms serve`', () => {
  it('refuses to start without credentials, naming both variables', async () => {
    const env = { ...process.env };
    delete env.DATAKEY_ACCESS_KEY_ID;
    delete env.DATAKEY_ACCESS_KEY_SECRET;
    const dir = makeTempDir();
    const res = await runCli(['kms', 'serve', '--listen', '127.0.0.1:0', '--data-dir', dir], env);
    expect(res.code).not.toBe(0);
    expect(res.code).not.toBeNull();
    expect(res.stderr).toContain('DATAKEY_ACCESS_KEY_ID');
    expect(res.stderr).toContain('DATAKEY_ACCESS_KEY_SECRET');
    expect(res.stdout).not.toContain('kms api listening');

    const onlyId = await runCli(['kms', 'serve', '--listen', '127.0.0.1:0', '--data-dir', dir], {
      ...env,
      DATAKEY_ACCESS_KEY_ID: 'id',
    });
    expect(onlyId.code).not.toBe(0);
    expect(onlyId.stderr).toContain('DATAKEY_ACCESS_KEY_SECRET');
  });

  it('keeps state across a SIGTERM restart on the same data dir, and SIGTERM exits 0', async () => {
    const dataDir = makeTempDir();
    const creds = { accessKeyId: 'restart-id', accessKeySecret: 'restart-secret' };
    const first = await startKms({ ...creds, dataDir });
    const kms1 = kmsClient(first);
    const key = (await kms1.createKey(new $Kms.CreateKeyRequest({ description: 'durable' })))
      .keyMetadata;
    await kms1.createAlias(
      new $Kms.CreateAliasRequest({ aliasName: 'alias/durable', keyId: key.keyId }),
    );
    const rotated = (
      await kms1.createKeyVersion(new $Kms.CreateKeyVersionRequest({ keyId: key.keyId }))
    ).keyVersion.keyVersionId;
    const made = await kms1.generateDataKey(
      new $Kms.GenerateDataKeyRequest({ keyId: key.keyId, encryptionContext: { a: 'b' } }),
    );
    const adv = await kms1.doRequest(
      'AdvanceGenerateDataKey',
      'HTTPS',
      'POST',
      '2016-01-20',
      'AK',
      { KeyId: 'alias/durable', NumberOfBytes: 32 },
      null as never,
      new $Util.RuntimeOptions({}),
    );
    expect(await first.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(first.stdoutLines.some((l) => l.includes('"msg":"kms api stopped"'))).toBe(true);

    const second = await startKms({ ...creds, dataDir });
    expect(second.port).toBeGreaterThan(0);
    const kms2 = kmsClient(second);
    const described = (
      await kms2.describeKey(new $Kms.DescribeKeyRequest({ keyId: 'alias/durable' }))
    ).keyMetadata;
    expect(described).toMatchObject({
      keyId: key.keyId,
      description: 'durable',
      primaryKeyVersion: rotated,
      keyState: 'Enabled',
    });
    const opened = await kms2.decrypt(
      new $Kms.DecryptRequest({
        ciphertextBlob: made.ciphertextBlob,
        encryptionContext: { a: 'b' },
      }),
    );
    expect(opened.plaintext).toBe(made.plaintext);
    const advOpened = await kms2.doRequest(
      'AdvanceDecrypt',
      'HTTPS',
      'POST',
      '2016-01-20',
      'AK',
      { CiphertextBlob: adv.CiphertextBlob },
      null as never,
      new $Util.RuntimeOptions({}),
    );
    expect(advOpened).toMatchObject({ Plaintext: adv.Plaintext, KeyVersionId: rotated });
    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});

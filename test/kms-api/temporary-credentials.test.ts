// Temporary credentials (what the emulated STS issues) on the KMS API: the official
// clients send the security token (pop-core: SecurityToken in a v1 signature;
// openapi-client: x-acs-security-token with ACS3), and the API checks it.
import { randomBytes } from 'node:crypto';
import Credential, { StaticSTSCredentialsProvider } from '@alicloud/credentials';
import OpenApi, * as $OpenApi from '@alicloud/openapi-client';
import RPCClient from '@alicloud/pop-core';
import * as $Util from '@alicloud/tea-util';
import { createLogger } from '../../src/common/logger';
import { KmsCore } from '../../src/kms/core';
import { RootKey } from '../../src/kms/root-key';
import { MemoryKeyStore } from '../../src/kms/store';
import { KmsApi, listen, type RunningServer } from '../../src/kms-api/server';
import { StsService } from '../../src/kms-api/sts';
import { kmsRpcParams } from '../../src/seal/alicloudkms-seal';
import {
  TemporaryCredentials,
  type IssuedCredentials,
} from '../../src/kms-api/temporary-credentials';

const credentials = { accessKeyId: 'test-id', accessKeySecret: 'test-secret' };

describe('TemporaryCredentials', () => {
  const temporary = new TemporaryCredentials('account-secret');
  const now = Date.now();
  const issued = temporary.issue('acs:ram::1:role/r', now + 60_000);
  const code = (f: () => unknown) => {
    try {
      f();
      return 'accepted';
    } catch (err) {
      return (err as { code: string }).code;
    }
  };

  test('the secret follows from a matching, unexpired token, also in another process (stateless)', () => {
    expect(issued.accessKeyId).toMatch(/^STS\./);
    const again = new TemporaryCredentials('account-secret');
    expect(again.secretFor(issued.accessKeyId, issued.securityToken, now)).toBe(
      issued.accessKeySecret,
    );
  });

  test('missing, malformed, foreign, mismatched and expired tokens are refused with their codes', () => {
    const other = temporary.issue('acs:ram::1:role/r', now + 60_000);
    const foreign = new TemporaryCredentials('another-account').issue('r', now + 60_000);
    const [head, body] = issued.securityToken.split('.');
    const tampered = `${head}.${body}.${'A'.repeat(43)}`;
    expect(code(() => temporary.secretFor(issued.accessKeyId, undefined, now))).toBe(
      'MissingSecurityToken',
    );
    expect(code(() => temporary.secretFor(issued.accessKeyId, 'CAIS.x', now))).toBe(
      'InvalidSecurityToken.Malformed',
    );
    expect(code(() => temporary.secretFor(issued.accessKeyId, tampered, now))).toBe(
      'InvalidSecurityToken.Malformed',
    );
    expect(code(() => temporary.secretFor(foreign.accessKeyId, foreign.securityToken, now))).toBe(
      'InvalidSecurityToken.Malformed',
    );
    expect(code(() => temporary.secretFor(issued.accessKeyId, other.securityToken, now))).toBe(
      'InvalidSecurityToken.MismatchWithAccessKey',
    );
    expect(
      code(() => temporary.secretFor(issued.accessKeyId, issued.securityToken, now + 60_000)),
    ).toBe('InvalidSecurityToken.Expired');
  });
});

describe('KMS API with STS on: official clients signing with temporary credentials', () => {
  let running: RunningServer;
  let sts: StsService;
  let keyId: string;

  beforeAll(async () => {
    const core = await KmsCore.open({
      store: new MemoryKeyStore(),
      rootKey: new RootKey(randomBytes(32)),
    });
    keyId = (await core.createKey({})).keyId;
    sts = new StsService({ providers: {}, roles: {} }, credentials.accessKeySecret, '1');
    const logger = createLogger('kms-api', { level: 'silent' });
    running = await listen(new KmsApi({ core, credentials, logger, rateLimit: 0, sts }), {
      host: '127.0.0.1',
      port: 0,
    });
  });
  afterAll(() => running.close());

  const acs3 = (c: IssuedCredentials) => {
    const credential = new Credential(
      null,
      StaticSTSCredentialsProvider.builder()
        .withAccessKeyId(c.accessKeyId)
        .withAccessKeySecret(c.accessKeySecret)
        .withSecurityToken(c.securityToken)
        .build(),
    );
    const client = new OpenApi(
      new $OpenApi.Config({ credential, endpoint: running.url.slice(7), protocol: 'http' }),
    );
    const params = kmsRpcParams('Encrypt', 'HTTP');
    return client
      .callApi(
        params,
        new $OpenApi.OpenApiRequest({ query: { KeyId: keyId, Plaintext: 'aGVsbG8=' } }),
        new $Util.RuntimeOptions({}),
      )
      .then(
        () => 'accepted',
        (err: { code: string }) => err.code,
      );
  };
  const v1 = (c: IssuedCredentials, securityToken = c.securityToken) =>
    new RPCClient({
      endpoint: running.url,
      apiVersion: '2016-01-20',
      accessKeyId: c.accessKeyId,
      accessKeySecret: c.accessKeySecret,
      securityToken,
    })
      .request('Encrypt', { KeyId: keyId, Plaintext: 'aGVsbG8=' }, { method: 'POST' })
      .then(
        () => 'accepted',
        (err: { code: string }) => err.code,
      );

  test('ACS3 (x-acs-security-token) and v1 (SecurityToken) are accepted with the matching token', async () => {
    const c = sts.credentials.issue('acs:ram::1:role/r', Date.now() + 60_000);
    expect(await acs3(c)).toBe('accepted');
    expect(await v1(c)).toBe('accepted');
  });

  test('the wrong token, an expired one and none are refused', async () => {
    const c = sts.credentials.issue('acs:ram::1:role/r', Date.now() + 60_000);
    const other = sts.credentials.issue('acs:ram::1:role/r', Date.now() + 60_000);
    const expired = sts.credentials.issue('acs:ram::1:role/r', Date.now() - 1);
    expect(await acs3({ ...c, securityToken: other.securityToken })).toBe(
      'InvalidSecurityToken.MismatchWithAccessKey',
    );
    expect(await acs3(expired)).toBe('InvalidSecurityToken.Expired');
    expect(await v1(expired)).toBe('InvalidSecurityToken.Expired');
    expect(await v1(c, '')).toBe('MissingSecurityToken');
  });
});

import { randomBytes, randomUUID } from 'node:crypto';
import {
  acs3Signature,
  acs3StringToSign,
  parseAcs3Authorization,
  signAcs3Request,
} from '../../src/kms-api/acs3';
import { encodeParams, stringToSignV1 } from '../../src/kms-api/signature';
import { startKms, type KmsProcess } from '../helpers/kms-process';
import { kmsTimestamp, rawRequest, signedParams, type RawResponse } from '../helpers/raw-request';

/**
 * ACS3 (the current SDKs' default signature) and the order of the
 * authentication checks. The official SDKs themselves are driven in test/sdk/.
 */

describe('ACS3 canonical request', () => {
  // Authorization computed by alibabacloud_openapi_util 0.2.4 `Client.get_authorization`
  // (the signer of alibabacloud_tea_openapi 0.4.6) for these exact inputs.
  const headers = {
    host: '127.0.0.1:8443',
    'x-acs-action': 'GenerateDataKey',
    'x-acs-version': '2016-01-20',
    'x-acs-date': '2026-11-22T08:00:00Z',
    'x-acs-signature-nonce': '3ee8c1b883d344afa94f4e0ad82fd6cf',
    'x-acs-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    accept: 'application/json',
    'content-type': 'application/x-www-form-urlencoded',
    'user-agent': 'AlibabaCloud (Linux) Python/3.11',
  };
  const signed =
    'accept;content-type;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version';
  // The SDK form-encodes the query on the wire: space as '+', '~' escaped.
  const query = new URLSearchParams({
    KeyId: 'alias/demo',
    EncryptionContext: '{"app":"orders api*~"}',
    NumberOfBytes: '32',
    Empty: '',
  }).toString();

  it.each([
    ['ACS3-HMAC-SHA256', '80ef4f23f3910f712c37b005e402f365563e53cde32593128e4a12f5372fade0'],
    ['ACS3-HMAC-SM3', 'dbe19b9123ae05ac817c44809b45264b6fd1b8877e14a6f61689eb3b740e795c'],
  ])('matches the Python SDK signer for %s', (algorithm, expected) => {
    const auth = parseAcs3Authorization(
      `${algorithm} Credential=testid,SignedHeaders=${signed},Signature=${expected}`,
    );
    const stringToSign = acs3StringToSign(auth, 'POST', '/', query, headers);
    expect(stringToSign.startsWith(`${algorithm}\n`)).toBe(true);
    expect(acs3Signature(auth, 'testsecret', stringToSign)).toBe(expected);
  });

  it('refuses Authorization headers missing a required signed header, or of another scheme', () => {
    expect(() =>
      parseAcs3Authorization(
        'ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;x-acs-action,Signature=00',
      ),
    ).toThrow(/SignedHeaders must include x-acs-content-sha256/);
    expect(() =>
      parseAcs3Authorization('ACS4-HMAC-SHA256 Credential=a/b,SignedHeaders=x,Signature=00'),
    ).toThrow(/ACS4-HMAC-SHA256 is not supported/);
    expect(() => parseAcs3Authorization('ACS3-HMAC-SHA256 nonsense')).toThrow(
      /Authorization header must be/,
    );
  });
});

describe('authentication against `datakey kms serve`', () => {
  let server: KmsProcess;
  beforeAll(async () => {
    server = await startKms();
  });

  function acs3(
    action: string,
    params: Record<string, string>,
    options: { date?: string; nonce?: string; secret?: string; body?: string } = {},
  ): Promise<RawResponse> {
    const query = encodeParams(new Map(Object.entries(params)));
    const headers = signAcs3Request(server, action, query, {
      host: `127.0.0.1:${server.port}`,
      date: options.date ?? kmsTimestamp(),
      nonce: options.nonce ?? randomBytes(16).toString('hex'),
      secret: options.secret,
      body: options.body,
    });
    return rawRequest(server.url, { method: 'POST', query, headers, body: options.body });
  }

  const code = (res: RawResponse) => [res.status, res.json?.Code];

  it('serves ACS3-signed calls with parameters in the query and in a form body', async () => {
    const created = await acs3('CreateKey', { Description: 'acs3 ~*+ test' });
    expect(code(created)).toEqual([200, undefined]);
    const keyId = (created.json?.KeyMetadata as { KeyId: string }).KeyId;
    const body = new URLSearchParams({ KeyId: keyId, NumberOfBytes: '24' }).toString();
    const generated = await acs3('GenerateDataKey', {}, { body });
    expect(generated.status).toBe(200);
    expect(Buffer.from(generated.json?.Plaintext as string, 'base64')).toHaveLength(24);
  });

  it('applies the v1 rules to ACS3: window, nonce, secret, unknown id, body hash', async () => {
    const stale = kmsTimestamp(new Date(Date.now() - 16 * 60_000));
    expect(code(await acs3('ListKeys', {}, { date: stale }))).toEqual([400, 'IllegalTimestamp']);
    const nonce = randomUUID();
    expect(code(await acs3('ListKeys', {}, { nonce }))).toEqual([200, undefined]);
    expect(code(await acs3('ListKeys', {}, { nonce }))).toEqual([400, 'SignatureNonceUsed']);
    const wrong = await acs3('ListKeys', { PageSize: '5' }, { secret: 'wrong' });
    expect(code(wrong)).toEqual([400, 'SignatureDoesNotMatch']);
    const message = wrong.json?.Message as string;
    expect(message).toMatch(/server string to sign is:ACS3-HMAC-SHA256\n[0-9a-f]{64}$/);
    expect(message).not.toContain(server.accessKeySecret);
    const stranger = signAcs3Request({ ...server, accessKeyId: 'nobody' }, 'ListKeys', '', {
      host: `127.0.0.1:${server.port}`,
      date: kmsTimestamp(),
      nonce: randomUUID(),
    });
    expect(code(await rawRequest(server.url, { method: 'POST', headers: stranger }))).toEqual([
      404,
      'InvalidAccessKeyId.NotFound',
    ]);
    // A body that is not the one whose hash was signed.
    const query = '';
    const headers = signAcs3Request(server, 'ListKeys', query, {
      host: `127.0.0.1:${server.port}`,
      date: kmsTimestamp(),
      nonce: randomUUID(),
      body: 'PageSize=5',
    });
    const tampered = await rawRequest(server.url, {
      method: 'POST',
      headers,
      body: 'PageSize=6',
    });
    expect(code(tampered)).toEqual([400, 'InvalidParameter']);
    expect(tampered.json?.Message).toContain('x-acs-content-sha256');
  });

  it('takes SignedHeaders naming prototype members (constructor, __proto__) as absent headers', async () => {
    const required =
      'host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version';
    const headers = signAcs3Request(server, 'ListKeys', '', {
      host: `127.0.0.1:${server.port}`,
      date: kmsTimestamp(),
      nonce: randomUUID(),
    });
    headers.authorization = `ACS3-HMAC-SHA256 Credential=${server.accessKeyId},SignedHeaders=constructor;__proto__;toString;${required},Signature=00`;
    const res = await rawRequest(server.url, { method: 'POST', headers });
    expect(code(res)).toEqual([400, 'SignatureDoesNotMatch']);
  });

  it('names the scheme it does not support (ACS4, ACS3-RSA-SHA256)', async () => {
    for (const scheme of ['ACS4-HMAC-SHA256', 'ACS3-RSA-SHA256']) {
      const res = await rawRequest(server.url, {
        method: 'POST',
        headers: {
          'x-acs-action': 'ListKeys',
          authorization: `${scheme} Credential=x,SignedHeaders=host,Signature=00`,
        },
      });
      expect(code(res)).toEqual([400, 'UnsupportedSignatureAlgorithm']);
      expect(res.json?.Message).toContain(scheme);
    }
  });

  it('v1 SignatureDoesNotMatch carries the server string to sign, as real KMS does', async () => {
    const params = signedParams(server, 'ListKeys', { PageSize: '3' }, { secret: 'wrong' });
    const res = await rawRequest(server.url, { query: encodeParams(params) });
    expect(code(res)).toEqual([400, 'SignatureDoesNotMatch']);
    const all = new Map(params);
    expect(res.json?.Message).toBe(
      'Specified signature is not matched with our calculation. server string to sign is:' +
        stringToSignV1('GET', all),
    );
    // aliyun-python-sdk-core takes split(':')[1] as the string to sign: it has no ':'.
    expect((res.json?.Message as string).split(':')[1]).toBe(stringToSignV1('GET', all));
  });

  it('tells an unauthenticated caller only why authentication failed', async () => {
    // Unknown action, bad Format, bad Version: the answer is still about the signature.
    const unsigned = await rawRequest(server.url, {
      query: 'Action=NoSuch&Format=YAML&Version=1999-01-01',
    });
    expect(code(unsigned)).toEqual([400, 'IncompleteSignature']);
    const badSecret = signedParams(
      server,
      'NoSuch',
      { Format: 'YAML', Version: '1999-01-01' },
      { secret: 'wrong' },
    );
    expect(code(await rawRequest(server.url, { query: encodeParams(badSecret) }))).toEqual([
      400,
      'SignatureDoesNotMatch',
    ]);
    // Missing Timestamp or SignatureNonce: IncompleteSignature, naming the field.
    for (const missing of ['Timestamp', 'SignatureNonce']) {
      const params = signedParams(server, 'ListKeys', {});
      params.delete(missing);
      const res = await rawRequest(server.url, { query: encodeParams(params) });
      expect(code(res)).toEqual([400, 'IncompleteSignature']);
      expect(res.json?.Message).toContain(missing);
    }
    // Once authenticated, the action and format problems are reported.
    const signed = signedParams(server, 'NoSuch', {});
    expect(code(await rawRequest(server.url, { query: encodeParams(signed) }))).toEqual([
      404,
      'InvalidAction.NotFound',
    ]);
    const yaml = signedParams(server, 'ListKeys', { Format: 'YAML' });
    expect(code(await rawRequest(server.url, { query: encodeParams(yaml) }))).toEqual([
      400,
      'InvalidParameter',
    ]);
  });

  it('takes an empty Format= as the JSON default', async () => {
    const params = signedParams(server, 'ListKeys', { Format: '' });
    const res = await rawRequest(server.url, { query: encodeParams(params) });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
  });
});

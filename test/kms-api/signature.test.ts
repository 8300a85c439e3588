import { canonicalQuery, percentEncode, signatureV1 } from '../../src/kms-api/signature';

/** The published test vector (computed with the official @alicloud/rpc-util). */
const VECTOR = new Map(
  Object.entries({
    AccessKeyId: 'testid',
    Action: 'GenerateDataKey',
    Format: 'JSON',
    KeyId: 'alias/demo',
    KeySpec: 'AES_256',
    RegionId: 'cn-hangzhou',
    SignatureMethod: 'HMAC-SHA1',
    SignatureNonce: '3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf',
    SignatureVersion: '1.0',
    Timestamp: '2026-11-22T08:00:00Z',
    Version: '2016-01-20',
    'EncryptionContext.app': 'orders api*',
  }),
);

describe('signatureV1', () => {
  it('matches the published POST vector', () => {
    expect(signatureV1('POST', VECTOR, 'testsecret')).toBe('OAf0CaJ4gyyxDXWIrFFuiZOTXeI=');
  });

  it('matches the published GET vector', () => {
    expect(signatureV1('GET', VECTOR, 'testsecret')).toBe('1PRB0SpOBsGvSk8LxcLYK6lJNn0=');
  });

  it('ignores a Signature parameter and the insertion order of parameters', () => {
    const shuffled = new Map([...VECTOR].reverse());
    shuffled.set('Signature', 'anything');
    expect(signatureV1('POST', shuffled, 'testsecret')).toBe('OAf0CaJ4gyyxDXWIrFFuiZOTXeI=');
  });

  it('changes with the secret, the method and any value', () => {
    const base = signatureV1('POST', VECTOR, 'testsecret');
    expect(signatureV1('POST', VECTOR, 'testsecreT')).not.toBe(base);
    expect(signatureV1('PUT', VECTOR, 'testsecret')).not.toBe(base);
    const changed = new Map(VECTOR);
    changed.set('EncryptionContext.app', 'orders api');
    expect(signatureV1('POST', changed, 'testsecret')).not.toBe(base);
  });

  it('percent-encodes the RFC 3986 way (space %20, * %2A, ~ kept)', () => {
    expect(percentEncode("a b*c~d!e'f(g)h/")).toBe('a%20b%2Ac~d%21e%27f%28g%29h%2F');
    expect(percentEncode('é')).toBe('%C3%A9');
    expect(
      canonicalQuery(
        new Map([
          ['b', '1'],
          ['a', 'x y'],
          ['Signature', 'z'],
        ]),
      ),
    ).toBe('a=x%20y&b=1');
  });
});

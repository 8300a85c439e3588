import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import { signAcs3Request } from '../../src/kms-api/acs3';
import { startKms, type KmsProcess } from '../helpers/kms-process';
import { fuzzSeed, prng, type Rng } from '../helpers/prng';
import {
  encodeParams,
  kmsTimestamp,
  rawRequest,
  signedParams,
  signedRequest,
  type RawOptions,
  type RawResponse,
} from '../helpers/raw-request';

/**
 * Seeded fuzzer for the KMS API of `datakey kms serve` (a child process).
 * Random and malformed parameters, encodings, methods, content types and sizes,
 * unsigned and correctly signed, v1 and ACS3 (so the noise reaches the action handlers).
 * Asserts: never a 5xx, a hang or a crash; every 4xx carries an Alibaba error
 * body (Code, Message, RequestId); unsigned requests never succeed; and the
 * state is intact afterwards.
 *
 * The default seed is fixed so a CI run is reproducible; KMS_FUZZ_SEED=random
 * explores new inputs, and KMS_FUZZ_SEED=<seed printed in a failure> replays one.
 */

const SEED = fuzzSeed(20261123);
const REQUESTS = Number(process.env.KMS_FUZZ_REQUESTS ?? 2000);
const CONCURRENCY = 8;
const PER_REQUEST_TIMEOUT_MS = 5_000;

const ACTIONS = [
  'CreateKey',
  'DescribeKey',
  'ListKeys',
  'EnableKey',
  'DisableKey',
  'ScheduleKeyDeletion',
  'CancelKeyDeletion',
  'CreateKeyVersion',
  'ListKeyVersions',
  'DescribeKeyVersion',
  'UpdateRotationPolicy',
  'CreateAlias',
  'UpdateAlias',
  'DeleteAlias',
  'ListAliases',
  'ListAliasesByKeyId',
  'GenerateDataKey',
  'GenerateDataKeyWithoutPlaintext',
  'AdvanceGenerateDataKey',
  'AdvanceGenerateDataKeyWithoutPlaintext',
  'Encrypt',
  'Decrypt',
  'AdvanceEncrypt',
  'AdvanceDecrypt',
  'ReEncrypt',
] as const;
const ODD_ACTIONS = ['', 'NoSuchAction', '__proto__', 'constructor', 'toString', 'hasOwnProperty'];
/** Actions that could make the protected key unusable: never aimed at it. */
const MUTATING = new Set(['DisableKey', 'ScheduleKeyDeletion', 'UpdateRotationPolicy']);

const PARAMS = [
  'KeyId',
  'KeySpec',
  'NumberOfBytes',
  'EncryptionContext',
  'EncryptionContext.app',
  'EncryptionContext.__proto__',
  'Aad',
  'Plaintext',
  'CiphertextBlob',
  'DryRun',
  'Description',
  'KeyUsage',
  'EnableAutomaticRotation',
  'RotationInterval',
  'PendingWindowInDays',
  'KeyVersionId',
  'AliasName',
  'PageNumber',
  'PageSize',
  'SourceEncryptionContext',
  'DestinationKeyId',
  'DestinationEncryptionContext',
  'RegionId',
  'Format',
  'Origin',
  'x',
  '__proto__',
  'constructor',
];

const PROTOTYPE_NAMES = ['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf'];
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

interface World {
  keyId: string;
  keyVersionId: string;
  aliasName: string;
  sacrificialKeyId: string;
  standardBlob: string;
  advanceBlob: string;
}

function fuzzValue(rng: Rng, world: World, forMutation: boolean): string {
  const keyRefs = forMutation
    ? [world.sacrificialKeyId, 'alias/fz-target', randomUUID()]
    : [
        world.keyId,
        world.aliasName,
        `acs:kms:cn-hangzhou:1:key/${world.keyId}`,
        world.sacrificialKeyId,
      ];
  const blob = Buffer.from(rng.pick([world.standardBlob, world.advanceBlob]), 'base64');
  switch (rng.int(12)) {
    case 0:
      return rng.pick([
        '',
        ' ',
        '\u0000',
        '%',
        '&',
        '=',
        '+',
        'null',
        'undefined',
        '💥',
        'é\u200b',
      ]);
    case 1:
      return rng.pick([
        '0',
        '1',
        '-1',
        '1e3',
        '0x10',
        '1024',
        '1025',
        '32',
        '16',
        '7',
        '366',
        '99999999999',
        'NaN',
        'Infinity',
        ' 1',
        '1.5',
        '0032',
        '１',
      ]);
    case 2:
      return rng.pick(['true', 'false', 'TRUE', 'False', 'yes', '1']);
    case 3:
      return rng.bytes(rng.int(rng.bool(0.1) ? 9000 : 100)).toString('base64');
    case 4:
      return rng.pick(['abc', '====', 'YQ', 'YQ=', '-_-_', 'AAAA\nAAAA', '*'.repeat(8)]);
    case 5: {
      // Real blobs, flipped, truncated, extended or cut to odd lengths.
      const b = Buffer.from(blob);
      const op = rng.int(4);
      if (op === 0) b[rng.int(b.length)] ^= 1 << rng.int(8);
      if (op === 1) return b.subarray(0, rng.int(b.length)).toString('base64');
      if (op === 2) return Buffer.concat([b, rng.bytes(1 + rng.int(40))]).toString('base64');
      return b.toString('base64');
    }
    case 6:
      return rng.pick([
        '{}',
        '[]',
        'null',
        '1',
        '"s"',
        '{"a":1}',
        '{"a":{"b":"c"}}',
        '{"__proto__":"x"}',
        '{"a":"b"}',
        '{"":"x"}',
        '{',
        `{"k":"${'a'.repeat(9000)}"}`,
        '['.repeat(5000),
        '{"constructor":"x","toString":"y"}',
      ]);
    case 7:
      return rng.pick(keyRefs);
    case 8:
      return rng.pick([
        `alias/fz-${rng.int(20)}`,
        'alias/acs',
        'alias/',
        'orders',
        `alias/${'a'.repeat(300)}`,
        'alias/fz-target',
      ]);
    case 9:
      return rng.pick([
        'AES_256',
        'AES_128',
        'Aliyun_AES_256',
        'RSA_2048',
        'EC_P256',
        'aes_256',
        // Names every JavaScript object inherits: must never match a spec table.
        ...PROTOTYPE_NAMES,
      ]);
    case 10:
      return rng.pick(['30d', '7d', '6d', '366d', '604800s', '1w', 'd', '24h']);
    default:
      return rng.bool(0.05) ? 'x'.repeat(40_000) : world.keyVersionId;
  }
}

function fuzzParams(rng: Rng, world: World, action: string): Record<string, string> {
  const params: Record<string, string> = {};
  const count = rng.int(6);
  for (let i = 0; i < count; i++) {
    params[rng.pick(PARAMS)] = fuzzValue(rng, world, MUTATING.has(action));
  }
  // Usually keep the format JSON so bodies are checked as JSON.
  if (params.Format !== undefined && rng.bool(0.7)) delete params.Format;
  return params;
}

interface Case {
  describe: string;
  options: RawOptions;
  /** A signed request that may legitimately succeed. */
  signed: boolean;
  action?: string;
}

const truncate = (s: string, n = 200) => (s.length > n ? `${s.slice(0, n)}…(${s.length})` : s);

function makeCase(rng: Rng, server: KmsProcess, world: World): Case {
  const action = rng.bool(0.9) ? rng.pick(ACTIONS) : rng.pick(ODD_ACTIONS);
  const kind = rng.int(10);
  if (kind <= 1) {
    // Correctly ACS3-signed (the current SDKs' scheme), fuzzed parameters in the query.
    const query = encodeParams(new Map(Object.entries(fuzzParams(rng, world, action))));
    const headers = signAcs3Request(server, action, query, {
      host: `127.0.0.1:${server.port}`,
      date: kmsTimestamp(),
      nonce: randomUUID(),
    });
    return {
      describe: `ACS3 POST ${action} ${truncate(query)}`,
      options: { method: 'POST', query, headers },
      signed: true,
      action,
    };
  }
  if (kind <= 4) {
    // Correctly signed (v1), fuzzed parameters: reaches the handlers.
    const method = rng.bool() ? 'GET' : 'POST';
    const encoded = encodeParams(
      signedParams(server, action, fuzzParams(rng, world, action), { method }),
    );
    const options: RawOptions =
      method === 'GET'
        ? { method, query: encoded }
        : {
            method,
            body: encoded,
            headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
          };
    return {
      describe: `signed ${method} ${action} ${truncate(encoded)}`,
      options,
      signed: true,
      action,
    };
  }
  if (kind === 5) {
    // Unsigned / half-signed noise.
    const params = { Action: action, Version: '2016-01-20', ...fuzzParams(rng, world, action) };
    if (rng.bool()) Object.assign(params, { AccessKeyId: server.accessKeyId, Signature: 'abc=' });
    if (rng.bool())
      Object.assign(params, { SignatureMethod: 'HMAC-SHA1', SignatureVersion: '1.0' });
    const query = encodeParams(new Map(Object.entries(params)));
    const authorization = rng.pick([
      undefined,
      'ACS3-HMAC-SHA256 Credential=x,SignedHeaders=host,Signature=zz',
      `ACS3-HMAC-SHA256 Credential=${server.accessKeyId},SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00`,
      `ACS3-HMAC-SHA256 Credential=${server.accessKeyId},SignedHeaders=${PROTOTYPE_NAMES.join(';')};host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=00`,
      'ACS4-HMAC-SHA256 Credential=a/b/c,SignedHeaders=host,Signature=00',
      'Bearer token',
      '',
      ...PROTOTYPE_NAMES,
    ]);
    // With the other ACS3 headers present, a bad Authorization reaches the signature check.
    const headers =
      authorization === undefined
        ? undefined
        : {
            authorization,
            'x-acs-action': action,
            'x-acs-version': '2016-01-20',
            'x-acs-date': kmsTimestamp(),
            'x-acs-signature-nonce': randomUUID(),
            'x-acs-content-sha256': EMPTY_SHA256,
          };
    return {
      describe: `unsigned GET ${truncate(query)} authorization=${authorization}`,
      options: { query, headers },
      signed: false,
    };
  }
  // Broken encodings, methods, content types and sizes.
  const valid = encodeParams(
    signedParams(
      server,
      action,
      { KeyId: MUTATING.has(action) ? world.sacrificialKeyId : world.keyId },
      { method: 'POST' },
    ),
  );
  const variants: (() => Case)[] = [
    () => {
      const query = `${valid}&KeyId=%ZZ%E0%A4%&Aad=%C3%28&x=%`;
      return {
        describe: `bad percent-encoding ${truncate(query)}`,
        options: { query },
        signed: false,
      };
    },
    () => {
      // Raw bytes that are not UTF-8 in the request line (latin1 string → raw bytes).
      const query = `Action=DescribeKey&KeyId=\u00ff\u00fe\u00c3&${valid}`;
      return { describe: 'invalid UTF-8 in the query', options: { query }, signed: false };
    },
    () => ({
      describe: 'invalid UTF-8 in a form body',
      options: {
        method: 'POST',
        body: Buffer.concat([
          Buffer.from(`${valid}&Description=`),
          Buffer.from([0xff, 0xc3, 0x28, 0xed, 0xa0, 0x80]),
        ]),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      },
      signed: false,
    }),
    () => {
      const query = `${valid}&${valid}`;
      return { describe: 'duplicate parameters', options: { query }, signed: false };
    },
    () => {
      const type = rng.pick([
        'application/json',
        'text/plain',
        'multipart/form-data; boundary=x',
        'application/xml',
        '',
        'application/x-www-form-urlencoded;;;',
      ]);
      const body = type === 'application/json' ? JSON.stringify({ Action: action }) : valid;
      return {
        describe: `content-type ${JSON.stringify(type)}`,
        options: { method: 'POST', body, headers: type ? { 'content-type': type } : {} },
        signed: type.startsWith('application/x-www-form-urlencoded'),
        action,
      };
    },
    () => {
      const method = rng.pick(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'PROPFIND', 'FOO']);
      return { describe: `method ${method}`, options: { method, query: valid }, signed: false };
    },
    () => ({
      describe: 'form body over 64 KiB',
      options: {
        method: 'POST',
        body: `${valid}&Description=${'a'.repeat(64 * 1024 + rng.int(100_000))}`,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      },
      signed: false,
    }),
    () => ({
      describe: 'query over 64 KiB',
      options: { query: `${valid}&Description=${'a'.repeat(64 * 1024 + rng.int(10_000))}` },
      signed: false,
    }),
    () => ({
      describe: 'too many parameters',
      options: {
        query: `${valid}&${Array.from({ length: 300 }, (_, i) => `p${i}=${i}`).join('&')}`,
      },
      signed: false,
    }),
    () => ({
      describe: 'header over 64 KiB',
      options: { query: valid, headers: { 'x-fuzz': 'h'.repeat(70 * 1024) } },
      signed: false,
    }),
    () => ({ describe: 'empty request', options: {}, signed: false }),
    () => ({
      describe: 'lying content-length',
      options: {
        method: 'POST',
        body: valid,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': String(10 * 1024 * 1024),
        },
        timeoutMs: 1_500,
      },
      signed: false,
    }),
  ];
  return rng.pick(variants)();
}

function violationOf(c: Case, res: RawResponse): string | undefined {
  if (res.status >= 500) return `status ${res.status}`;
  if (res.status < 200 || (res.status >= 300 && res.status < 400)) return `status ${res.status}`;
  if (c.options.method === 'HEAD') return res.status >= 400 ? undefined : 'HEAD succeeded';
  const xml = /xml/.test(String(res.headers['content-type']));
  if (res.status === 200) {
    if (!c.signed) return 'an unsigned or malformed request succeeded';
    if (xml)
      return /<RequestId>[^<]+<\/RequestId>/.test(res.text) ? undefined : 'XML without RequestId';
    return typeof res.json?.RequestId === 'string' ? undefined : '200 without a JSON RequestId';
  }
  if (xml) {
    return /<Code>[^<]+<\/Code>/.test(res.text) &&
      /<Message>[^<]*<\/Message>/.test(res.text) &&
      /<RequestId>[^<]+<\/RequestId>/.test(res.text)
      ? undefined
      : 'XML error body without Code/Message/RequestId';
  }
  const body = res.json;
  if (!body) return 'error body is not JSON';
  for (const field of ['Code', 'Message', 'RequestId']) {
    if (typeof body[field] !== 'string' || body[field] === '') return `error body without ${field}`;
  }
  return undefined;
}

describe(`KMS API fuzz (seed ${SEED}, ${REQUESTS} requests)`, () => {
  let server: KmsProcess;
  let world: World;
  let plaintext: string;
  let keysBefore: number;

  const ok = async (action: string, params: Record<string, string>) => {
    const res = await signedRequest(server.url, server, action, params);
    if (res.status !== 200) throw new Error(`${action}: ${res.status} ${res.text}`);
    return res.json as Record<string, never>;
  };

  beforeAll(async () => {
    server = await startKms({ args: ['--rate-limit', '0'] });
    const key = (await ok('CreateKey', {})).KeyMetadata as {
      KeyId: string;
      PrimaryKeyVersion: string;
    };
    const sacrificial = (await ok('CreateKey', {})).KeyMetadata as { KeyId: string };
    await ok('CreateAlias', { AliasName: 'alias/fz-protected', KeyId: key.KeyId });
    await ok('CreateAlias', { AliasName: 'alias/fz-target', KeyId: sacrificial.KeyId });
    const made = await ok('GenerateDataKey', {
      KeyId: key.KeyId,
      EncryptionContext: '{"app":"fuzz"}',
    });
    const adv = await ok('AdvanceGenerateDataKeyWithoutPlaintext', {
      KeyId: key.KeyId,
      NumberOfBytes: '32',
    });
    plaintext = made.Plaintext;
    world = {
      keyId: key.KeyId,
      keyVersionId: key.PrimaryKeyVersion,
      aliasName: 'alias/fz-protected',
      sacrificialKeyId: sacrificial.KeyId,
      standardBlob: made.CiphertextBlob,
      advanceBlob: adv.CiphertextBlob,
    };
    keysBefore = (await ok('ListKeys', {})).TotalCount;
  });

  afterAll(async () => {
    if (server?.alive()) await server.stop();
  });

  it('never answers 5xx, hangs or crashes; every error is an Alibaba error body', async () => {
    const rng = prng(SEED);
    const cases = Array.from({ length: REQUESTS }, () => makeCase(rng, server, world));
    const violations: string[] = [];
    const statuses = new Map<number, number>();
    let keysCreated = 0;
    let next = 0;
    const started = Date.now();
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

    const worker = async () => {
      while (next < cases.length) {
        const index = next++;
        const c = cases[index];
        let res: RawResponse;
        try {
          res = await rawRequest(server.url, {
            timeoutMs: PER_REQUEST_TIMEOUT_MS,
            // Broken requests may make the server close the connection: no reuse for them.
            agent: c.signed ? agent : undefined,
            ...c.options,
          });
        } catch (err) {
          violations.push(`seed ${SEED} #${index} ${c.describe}: ${(err as Error).message}`);
          continue;
        }
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (c.action === 'CreateKey' && res.status === 200) keysCreated++;
        const why = violationOf(c, res);
        if (why) {
          violations.push(
            `seed ${SEED} #${index} ${c.describe}: ${why}; got ${res.status} ${truncate(res.text)}`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    agent.destroy();

    const summary = [...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`);
    // How fast is a benchmark's concern (npm run bench:kms); here every case is sent and answered.
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      `fuzz seed ${SEED}: ${next} requests in ${seconds} s, statuses ${summary.join(' ')}`,
    );
    expect(violations).toEqual([]);
    expect(next).toBe(cases.length);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0); // the fuzz did reach the handlers
    expect(server.alive()).toBe(true);

    // State is intact: the protected key still opens what it wrapped before, both flows.
    const opened = await ok('Decrypt', {
      CiphertextBlob: world.standardBlob,
      EncryptionContext: '{"app":"fuzz"}',
    });
    expect(opened.Plaintext).toBe(plaintext);
    const advOpened = await ok('AdvanceDecrypt', { CiphertextBlob: world.advanceBlob });
    expect(Buffer.from(advOpened.Plaintext, 'base64')).toHaveLength(32);
    const described = (await ok('DescribeKey', { KeyId: world.keyId })).KeyMetadata as {
      KeyState: string;
    };
    expect(described.KeyState).toBe('Enabled');
    // Only keys that the fuzz created through valid requests were added.
    expect((await ok('ListKeys', {})).TotalCount).toBe(keysBefore + keysCreated);
  }, 60_000);
});

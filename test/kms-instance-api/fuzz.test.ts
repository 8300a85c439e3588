import { ERROR, MESSAGES } from '../../src/kms-instance-api/messages';
import { decode, encode, ProtobufError, type Message } from '../../src/kms-instance-api/protobuf';
import {
  rawClientKey,
  sendInstanceRequest,
  signedInstanceRequest,
  type RawClientKey,
  type RawInstanceRequest,
} from '../helpers/instance-client';
import { provision } from '../helpers/instance-provisioning';
import { startKms, type KmsProcess } from '../helpers/kms-process';
import { fuzzSeed, prng, type Rng } from '../helpers/prng';

/**
 * Seeded fuzzer for the Instance API of `datakey kms serve --instance-listen`:
 * malformed and mutated protobuf bodies (correctly signed, so they reach the
 * decoder), wrong header values, oversized bodies, odd methods and paths.
 * Asserts: never a 5xx, a hang or a crash; every refusal is a 4xx whose body
 * is a protobuf Error with the same status, a code and a request id; and the
 * server still answers a good request afterwards. KMS_FUZZ_SEED replays a run.
 */

const SEED = fuzzSeed(20261201);
const REQUESTS = Number(process.env.KMS_INSTANCE_FUZZ_REQUESTS ?? 600);
const CONCURRENCY = 4;
const OPERATIONS = Object.keys(MESSAGES) as (keyof typeof MESSAGES)[];

let server: KmsProcess;
let url: string;
let ca: string;
let key: RawClientKey;
let keyId: string;

beforeAll(async () => {
  server = await startKms({ args: ['--instance-listen', '127.0.0.1:0'] });
  url = server.instanceUrl as string;
  const p = await provision(server);
  ca = p.ca;
  keyId = p.keyId;
  key = rawClientKey(p.clients.good);
}, 60_000);

afterAll(() => server?.stop());

function validBody(rng: Rng, operation: keyof typeof MESSAGES): Buffer {
  const message: Message = {};
  for (const [name, [, type]] of Object.entries(MESSAGES[operation].request)) {
    if (rng.bool(0.3)) continue;
    if (type === 'int32') message[name] = rng.pick([1, 32, 0, -1, 1024, 1025, 2 ** 31 - 1]);
    else if (type === 'string') message[name] = rng.pick([keyId, 'AES_GCM', '', 'alias/x', 'é']);
    else message[name] = rng.bytes(rng.pick([0, 1, 12, 16, 80, 200]));
  }
  return encode(MESSAGES[operation].request, message);
}

function mutate(rng: Rng, body: Buffer): Buffer {
  const out = Buffer.from(body);
  switch (rng.int(4)) {
    case 0:
      return rng.bytes(rng.int(300));
    case 1:
      return out.subarray(0, rng.int(out.length + 1));
    case 2:
      for (let i = 0; i < 1 + rng.int(4) && out.length > 0; i++)
        out[rng.int(out.length)] ^= 1 << rng.int(8);
      return out;
    default:
      return Buffer.concat([out, Buffer.from([rng.int(256), rng.int(256), rng.int(256)])]);
  }
}

const HEADER_NOISE: Record<string, string[]> = {
  'x-kms-apiversion': ['dkms-gcs-0.1', '', 'x'.repeat(300)],
  'x-kms-apiname': ['Sign', 'Nope', '__proto__', 'constructor', ''],
  'x-kms-signaturemethod': ['RSA_PKCS1_SHA_1', 'HMAC-SHA1', ''],
  'x-kms-acccesskeyid': ['KAAP.00000000-0000-0000-0000-000000000000', '', '__proto__'],
  date: ['yesterday', 'Thu, 01 Jan 1970 00:00:00 GMT', ''],
  'content-sha256': ['00', 'A'.repeat(64), ''],
  'content-type': ['application/json', 'text/plain', ''],
  authorization: ['Bearer', 'Bearer !!!', 'Basic eDp5', `Bearer ${'A'.repeat(400)}`],
};

function makeCase(rng: Rng): RawInstanceRequest {
  const operation = rng.pick(OPERATIONS);
  const kind = rng.int(5);
  if (kind === 0)
    return signedInstanceRequest(key, operation, mutate(rng, validBody(rng, operation)));
  if (kind === 1) return signedInstanceRequest(key, operation, validBody(rng, operation));
  if (kind === 2) {
    const request = signedInstanceRequest(key, operation, validBody(rng, operation));
    const name = rng.pick(Object.keys(HEADER_NOISE));
    const value = rng.pick(HEADER_NOISE[name]);
    if (value === '') delete request.headers[name];
    else request.headers[name] = value;
    return request;
  }
  if (kind === 3) {
    return signedInstanceRequest(key, operation, rng.bytes(64 * 1024 + 1 + rng.int(4096)));
  }
  return {
    ...signedInstanceRequest(key, operation, validBody(rng, operation)),
    method: rng.pick(['GET', 'PUT', 'DELETE', 'POST']),
    path: rng.pick(['/', '/x', '/?a=b', '//']),
  };
}

function problemOf(status: number, body: Buffer): string | undefined {
  if (status >= 500) return `status ${status}`;
  if (status === 200) return undefined;
  if (status < 400) return `status ${status}`;
  let error: Message;
  try {
    error = decode(ERROR, body);
  } catch (err) {
    return `error body is not protobuf: ${(err as Error).message}`;
  }
  if (error.StatusCode !== status) return `StatusCode ${String(error.StatusCode)} != ${status}`;
  if (!error.ErrorCode || !error.RequestId) return 'Error without ErrorCode or RequestId';
  return undefined;
}

describe(`Instance API fuzz (seed ${SEED}, ${REQUESTS} requests)`, () => {
  test('the protobuf decoder refuses garbage with ProtobufError only', () => {
    const rng = prng(SEED);
    for (let i = 0; i < 5000; i++) {
      const schema = MESSAGES[rng.pick(OPERATIONS)].request;
      try {
        decode(schema, rng.bytes(rng.int(64)));
      } catch (err) {
        expect(err).toBeInstanceOf(ProtobufError);
      }
    }
  });

  test('every answer is a 200 or a 4xx protobuf Error; the server survives', async () => {
    const rng = prng(SEED);
    const cases = Array.from({ length: REQUESTS }, () => makeCase(rng));
    const problems: string[] = [];
    const statuses = new Map<number, number>();
    let next = 0;
    const worker = async () => {
      while (next < cases.length) {
        const index = next++;
        try {
          const res = await sendInstanceRequest(url, ca, cases[index]);
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const problem = problemOf(res.status, res.body);
          if (problem) problems.push(`case ${index}: ${problem}`);
        } catch (err) {
          // A server may close an oversized upload early; anything else is a failure.
          const oversized = cases[index].body.length > 64 * 1024;
          if (!oversized) problems.push(`case ${index}: ${(err as Error).message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    expect(problems).toEqual([]);
    expect(server.alive()).toBe(true);
    expect(statuses.get(200)).toBeGreaterThan(0);
    expect(statuses.get(413)).toBeGreaterThan(0);
    expect(statuses.get(400)).toBeGreaterThan(0);

    const body = encode(MESSAGES.GenerateRandom.request, { Length: 8 });
    const ok = await sendInstanceRequest(
      url,
      ca,
      signedInstanceRequest(key, 'GenerateRandom', body),
    );
    expect(ok.status).toBe(200);
    expect((decode(MESSAGES.GenerateRandom.response, ok.body).Random as Buffer).length).toBe(8);
  }, 120_000);
});

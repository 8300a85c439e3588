/**
 * `npm run bench:kms`: throughput of the KMS core and of the KMS HTTP API, each
 * against a bare baseline measured in the same run. Figures, not a test.
 *
 * (a) In process: the core's GenerateDataKey and Decrypt against a CSPRNG draw of
 *     32 bytes + an AES-256-GCM seal of them under a random 12-byte IV, and the
 *     matching open. Each is run for a fixed time per round, rounds interleaved,
 *     median taken.
 * (b) Over loopback HTTP: the real server (`node dist/cli.js kms serve
 *     --rate-limit 0`, a child process, its log to /dev/null) driven by autocannon
 *     (another child process) with signed GenerateDataKeyWithoutPlaintext requests,
 *     each with a fresh nonce; against a bare Node http server answering a fixed JSON
 *     body, same load settings, same run. Twice: signed with signature v1 (GET,
 *     `http_vs_bare`) and with ACS3-HMAC-SHA256 as the current SDKs sign (POST and
 *     headers, `acs3_http_vs_bare`); the bare server gets the same signed requests.
 * (c) Key generation stall: latency of sequential DescribeKey calls while 14
 *     RSA_2048 keys are created one after another, against the same probe idle.
 *
 * (d) The KMS Instance API (`--instance-listen`): AdvanceGenerateDataKey over TLS
 *     with a client key's RSA signature verified per request, from a load
 *     generator in its own process (harness/bench/instance-load-worker.ts), after
 *     provisioning the client key through the OpenAPI as an application would.
 *
 * Environment: BENCH_SECONDS (HTTP run, default 30), BENCH_WARMUP_SECONDS (HTTP
 * warm-up, default 3), BENCH_CONNECTIONS (default 50), BENCH_CORE_SECONDS (per round,
 * default 3), BENCH_CORE_ROUNDS (default 5), BENCH_SERVER_NODE_ARGS (extra node
 * flags for the KMS server child, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
 *
 * The last line of output is one JSON object with the headline figures.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import {
  createCipheriv,
  createDecipheriv,
  createSecretKey,
  randomBytes,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, closeSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type autocannon from 'autocannon';
import { KmsCore } from '../../src/kms/core';
import { RootKey } from '../../src/kms/root-key';
import { MemoryKeyStore } from '../../src/kms/store';
import type { InstanceLoadJob, InstanceLoadResult } from './instance-load-worker';
import type { LoadJob } from './load-worker';
import { RequestSigner } from './signed-request';
import { privateKeyPemOfPkcs12 } from './worker-process';
import { freePort, sleep } from '../../src/common/wait';
import { repoRoot } from '../devcluster/paths';

const env = (name: string, fallback: number): number => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
};

const HTTP_SECONDS = env('BENCH_SECONDS', 30);
const WARMUP_SECONDS = env('BENCH_WARMUP_SECONDS', 3);
const CONNECTIONS = Math.round(env('BENCH_CONNECTIONS', 50));
const CORE_SECONDS = env('BENCH_CORE_SECONDS', 3);
const CORE_ROUNDS = Math.round(env('BENCH_CORE_ROUNDS', 5));
const DATA_KEY_BYTES = 32;
const IV_BYTES = 12;
const RING = 1024;

const ACCESS_KEY_ID = 'bench-access-key';
const ACCESS_KEY_SECRET = randomBytes(24).toString('base64url');

const line = (text: string) => console.log(text);
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits;
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const loadAverage = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

// ---- (a) in process ----------------------------------------------------------

/** Calls `op` in batches until `seconds` have passed; returns ops/s. */
function opsPerSecond(op: () => void, seconds: number): number {
  const batch = 256;
  const start = performance.now();
  const end = start + seconds * 1000;
  let ops = 0;
  let now = start;
  while (now < end) {
    for (let i = 0; i < batch; i++) op();
    ops += batch;
    now = performance.now();
  }
  return ops / ((now - start) / 1000);
}

interface Sealed {
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

/**
 * The baseline: what any envelope-encryption service must at least do per call,
 * written as leanly as Node allows (no concatenation, no AAD, no framing).
 */
function bareSeal(key: KeyObject): Sealed {
  const plaintext = randomBytes(DATA_KEY_BYTES);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const ciphertext = cipher.update(plaintext);
  cipher.final();
  const sealed = { iv, ciphertext, tag: cipher.getAuthTag() };
  plaintext.fill(0);
  return sealed;
}

function bareOpen(key: KeyObject, sealed: Sealed): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.iv);
  decipher.setAuthTag(sealed.tag);
  const first = decipher.update(sealed.ciphertext);
  const rest = decipher.final();
  return rest.length === 0 ? first : Buffer.concat([first, rest]);
}

interface CoreFigures {
  generate: number;
  decrypt: number;
  seal: number;
  open: number;
}

async function benchCore(): Promise<CoreFigures> {
  const core = await KmsCore.open({
    store: new MemoryKeyStore(),
    rootKey: new RootKey(randomBytes(32)),
  });
  const { keyId } = await core.createKey({});
  const bareKey = createSecretKey(randomBytes(32));

  const blobs = Array.from(
    { length: RING },
    () => core.generateDataKeyWithoutPlaintext({ keyId }).ciphertextBlob,
  );
  const sealedRing = Array.from({ length: RING }, () => bareSeal(bareKey));
  let b = 0;
  let s = 0;

  // Sanity: both paths round-trip before anything is timed.
  const check = core.generateDataKey({ keyId });
  const back = core.decrypt({ ciphertextBlob: check.ciphertextBlob }).plaintext;
  if (!timingSafeEqual(check.plaintext, back)) throw new Error('core round trip failed');
  check.plaintext.fill(0);
  back.fill(0);
  bareOpen(bareKey, sealedRing[0]).fill(0);

  const ops: Record<keyof CoreFigures, () => void> = {
    seal: () => {
      bareSeal(bareKey);
    },
    generate: () => {
      core.generateDataKey({ keyId }).plaintext.fill(0);
    },
    open: () => {
      bareOpen(bareKey, sealedRing[s++ & (RING - 1)]).fill(0);
    },
    decrypt: () => {
      core.decrypt({ ciphertextBlob: blobs[b++ & (RING - 1)] }).plaintext.fill(0);
    },
  };
  const names = Object.keys(ops) as (keyof CoreFigures)[];
  for (const name of names) opsPerSecond(ops[name], Math.min(1, CORE_SECONDS)); // warm-up
  const samples: Record<keyof CoreFigures, number[]> = {
    seal: [],
    generate: [],
    open: [],
    decrypt: [],
  };
  // Rounds interleave the four, so drifting machine load hits all of them alike.
  for (let r = 0; r < CORE_ROUNDS; r++) {
    for (const name of names) samples[name].push(opsPerSecond(ops[name], CORE_SECONDS));
  }
  await core.close();
  const spread = (name: keyof CoreFigures) =>
    `min ${fmt(Math.min(...samples[name]))}, max ${fmt(Math.max(...samples[name]))}`;
  const figures = {
    generate: median(samples.generate),
    decrypt: median(samples.decrypt),
    seal: median(samples.seal),
    open: median(samples.open),
  };
  line(`core, in process (${CORE_ROUNDS} rounds x ${CORE_SECONDS} s, median):`);
  line(
    `  GenerateDataKey          ${fmt(figures.generate).padStart(9)} ops/s (${spread('generate')})`,
  );
  line(`  baseline seal            ${fmt(figures.seal).padStart(9)} ops/s (${spread('seal')})`);
  line(
    `    -> GenerateDataKey / seal = ${(figures.generate / figures.seal).toFixed(3)}  (goal >= 0.8)`,
  );
  line(
    `  Decrypt                  ${fmt(figures.decrypt).padStart(9)} ops/s (${spread('decrypt')})`,
  );
  line(`  baseline open            ${fmt(figures.open).padStart(9)} ops/s (${spread('open')})`);
  line(`    -> Decrypt / open = ${(figures.decrypt / figures.open).toFixed(3)}`);
  return figures;
}

// ---- (b) over HTTP -----------------------------------------------------------

/** Linux's USER_HZ: /proc reports CPU time in these ticks (`getconf CLK_TCK`). */
const CLOCK_TICKS = 100;

/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

function failOnEarlyExit(child: ChildProcess, name: string, stderr: () => string): void {
  child.once('exit', (code, signal) => {
    if (!stopping) {
      console.error(`${name} exited early (${code ?? signal}): ${stderr()}`);
      process.exit(1);
    }
  });
}
let stopping = false;

async function startKmsServer(
  extraArgs: string[] = [],
): Promise<{ child: ChildProcess; url: string; dataDir: string }> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'kms-bench-'));
  const port = await freePort();
  const devNull = openSync('/dev/null', 'w');
  const extra = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const cli = path.join(repoRoot, 'dist', 'cli.js');
  const child = spawn(
    process.execPath,
    [
      ...extra,
      cli,
      'kms',
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
      '--data-dir',
      dataDir,
      '--rate-limit',
      '0',
      ...extraArgs,
    ],
    {
      env: {
        ...process.env,
        DATAKEY_ACCESS_KEY_ID: ACCESS_KEY_ID,
        DATAKEY_ACCESS_KEY_SECRET: ACCESS_KEY_SECRET,
      },
      stdio: ['ignore', devNull, 'pipe'],
    },
  );
  closeSync(devNull);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  failOnEarlyExit(child, 'kms server', () => stderr);
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      await fetch(`${url}/`);
      break;
    } catch {
      if (i > 100) throw new Error(`kms server did not come up: ${stderr}`);
      await sleep(100);
    }
  }
  return { child, url, dataDir };
}

async function startBareServer(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [path.join(__dirname, 'bare-server.js')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  failOnEarlyExit(child, 'bare server', () => '');
  const port = await new Promise<string>((resolve) => {
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

type Scheme = 'v1' | 'ACS3';

async function call(
  url: string,
  signer: RequestSigner,
  action: string,
  params: Record<string, string> = {},
  scheme: Scheme = 'v1',
): Promise<{ status: number; body: Record<string, unknown>; path: string }> {
  const signed = signer.call(scheme, new URL(url).host, action, params);
  const res = await fetch(url + signed.path, { method: signed.method, headers: signed.headers });
  return {
    status: res.status,
    body: (await res.json()) as Record<string, unknown>,
    path: signed.path,
  };
}

/** One key, and a check that the server does what the load will ask of it. */
async function prepareKms(url: string): Promise<string> {
  const signer = new RequestSigner(ACCESS_KEY_ID, ACCESS_KEY_SECRET);
  const created = await call(url, signer, 'CreateKey');
  const keyId = (created.body.KeyMetadata as { KeyId?: string } | undefined)?.KeyId;
  if (created.status !== 200 || !keyId) {
    throw new Error(`CreateKey failed: ${created.status} ${JSON.stringify(created.body)}`);
  }
  const generated = await call(url, signer, 'GenerateDataKey', { KeyId: keyId });
  const decrypted = await call(url, signer, 'Decrypt', {
    CiphertextBlob: String(generated.body.CiphertextBlob),
  });
  if (
    generated.status !== 200 ||
    decrypted.status !== 200 ||
    decrypted.body.Plaintext !== generated.body.Plaintext
  ) {
    throw new Error('GenerateDataKey / Decrypt round trip over HTTP failed');
  }
  for (const scheme of ['ACS3', 'v1'] as const) {
    const signed = await call(
      url,
      signer,
      'GenerateDataKeyWithoutPlaintext',
      { KeyId: keyId },
      scheme,
    );
    if (signed.status !== 200 || typeof signed.body.CiphertextBlob !== 'string') {
      throw new Error(
        `${scheme} GenerateDataKeyWithoutPlaintext failed: ${JSON.stringify(signed.body)}`,
      );
    }
  }
  const probe = await call(url, signer, 'GenerateDataKeyWithoutPlaintext', { KeyId: keyId });
  const replay = await fetch(url + probe.path);
  const replayCode = ((await replay.json()) as { Code?: string }).Code;
  if (replay.status !== 400 || replayCode !== 'SignatureNonceUsed') {
    throw new Error(`a replayed request was not refused: ${replay.status} ${replayCode}`);
  }
  line('  sanity: CreateKey, GenerateDataKey/Decrypt round trip, v1 and ACS3, replay refused: ok');
  return keyId;
}

interface LoadFigures {
  result: autocannon.Result;
  rps: number;
  serverCpu: number;
  loadCpu: number;
}

/** Runs autocannon in a child process against `url`; CPU use of server and load too. */
async function load(
  url: string,
  server: ChildProcess,
  seconds: number,
  params: Record<string, string>,
  scheme: Scheme,
): Promise<LoadFigures> {
  const job: LoadJob = {
    url,
    connections: CONNECTIONS,
    seconds,
    action: 'GenerateDataKeyWithoutPlaintext',
    params,
    accessKeyId: ACCESS_KEY_ID,
    accessKeySecret: ACCESS_KEY_SECRET,
    scheme,
  };
  const worker = fork(path.join(__dirname, 'load-worker.js'), [JSON.stringify(job)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const serverBefore = cpuSeconds(server.pid);
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    let got: autocannon.Result | undefined;
    let loadCpu = NaN;
    worker.on('message', (message) => {
      got = message as autocannon.Result;
      loadCpu = cpuSeconds(worker.pid);
      (got as autocannon.Result & { loadCpu?: number }).loadCpu = loadCpu;
    });
    worker.once('error', reject);
    worker.once('exit', (code) =>
      got ? resolve(got) : reject(new Error(`load worker exited with ${code}`)),
    );
  });
  const serverCpu = cpuSeconds(server.pid) - serverBefore;
  const loadCpu = (result as autocannon.Result & { loadCpu?: number }).loadCpu ?? NaN;
  return {
    result,
    rps: result['2xx'] / result.duration,
    serverCpu: serverCpu / result.duration,
    loadCpu: loadCpu / result.duration,
  };
}

function describeLoad(name: string, f: LoadFigures): void {
  const r = f.result;
  const codes = Object.entries(r.statusCodeStats ?? {})
    .map(([code, { count }]) => `${code}: ${count}`)
    .join(', ');
  line(
    `  ${name.padEnd(6)} ${fmt(f.rps).padStart(7)} req/s (2xx only)  ` +
      `latency p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, max ${r.latency.max} ms`,
  );
  line(
    `         ${fmt(r.requests.total)} responses in ${r.duration} s [${codes}]; ` +
      `non-2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}`,
  );
  line(
    `         CPU: server ${(f.serverCpu * 100).toFixed(0)}% of a core ` +
      `(${((f.serverCpu / f.rps) * 1e6).toFixed(0)} µs per request), ` +
      `load generator ${(f.loadCpu * 100).toFixed(0)}% of a core`,
  );
}

interface HttpFigures {
  kms: LoadFigures;
  bare: LoadFigures;
  acs3: LoadFigures;
  acs3Bare: LoadFigures;
  stall: StallFigures;
}

async function benchHttp(): Promise<HttpFigures> {
  line(
    `http, loopback (${CONNECTIONS} keep-alive connections, ${HTTP_SECONDS} s each ` +
      `after ${WARMUP_SECONDS} s warm-up; load generator in its own process):`,
  );
  const kmsServer = await startKmsServer();
  const bareServer = await startBareServer();
  try {
    const keyId = await prepareKms(kmsServer.url);
    const params = { KeyId: keyId };
    const measured: Partial<Record<string, LoadFigures>> = {};
    for (const scheme of ['v1', 'ACS3'] as const) {
      await load(bareServer.url, bareServer.child, WARMUP_SECONDS, params, scheme);
      await load(kmsServer.url, kmsServer.child, WARMUP_SECONDS, params, scheme);
      const bare = await load(bareServer.url, bareServer.child, HTTP_SECONDS, params, scheme);
      line(`  (load average after the bare ${scheme} run: ${loadAverage()})`);
      const kms = await load(kmsServer.url, kmsServer.child, HTTP_SECONDS, params, scheme);
      line(`  (load average after the kms ${scheme} run: ${loadAverage()})`);
      describeLoad(`kms ${scheme}`, kms);
      describeLoad(`bare ${scheme}`, bare);
      measured[`kms ${scheme}`] = kms;
      measured[`bare ${scheme}`] = bare;
    }
    const stall = await benchKeygenStall(kmsServer.url, keyId);
    return {
      kms: measured['kms v1'] as LoadFigures,
      bare: measured['bare v1'] as LoadFigures,
      acs3: measured['kms ACS3'] as LoadFigures,
      acs3Bare: measured['bare ACS3'] as LoadFigures,
      stall,
    };
  } finally {
    stopping = true;
    await Promise.all([stopChild(kmsServer.child), stopChild(bareServer.child)]);
    rmSync(kmsServer.dataDir, { recursive: true, force: true });
  }
}

// ---- (c) key generation stall ----------------------------------------------------

const STALL_KEYS = 14;

interface StallFigures {
  idleP50: number;
  busyP50: number;
  busyMax: number;
}

/** Latencies (ms) of sequential DescribeKey calls until `done` settles. */
async function probeUntil(url: string, keyId: string, done: Promise<unknown>): Promise<number[]> {
  const signer = new RequestSigner(ACCESS_KEY_ID, ACCESS_KEY_SECRET);
  let finished = false;
  void done.finally(() => (finished = true));
  const latencies: number[] = [];
  while (!finished) {
    const started = performance.now();
    const res = await call(url, signer, 'DescribeKey', { KeyId: keyId });
    if (res.status !== 200) throw new Error(`DescribeKey probe failed: ${res.status}`);
    latencies.push(performance.now() - started);
  }
  return latencies;
}

/** Other requests' latency while RSA_2048 keys are generated (issue: p50 3 ms → 434 ms when on the event loop). */
async function benchKeygenStall(url: string, keyId: string): Promise<StallFigures> {
  const signer = new RequestSigner(ACCESS_KEY_ID, ACCESS_KEY_SECRET);
  const idle = await probeUntil(url, keyId, sleep(2_000));
  const creations = (async () => {
    for (let i = 0; i < STALL_KEYS; i++) {
      const res = await call(url, signer, 'CreateKey', {
        KeySpec: 'RSA_2048',
        KeyUsage: 'SIGN/VERIFY',
      });
      if (res.status !== 200) throw new Error(`RSA_2048 CreateKey failed: ${res.status}`);
    }
  })();
  const busy = await probeUntil(url, keyId, creations);
  await creations;
  const figures = {
    idleP50: round(median(idle), 2),
    busyP50: round(median(busy), 2),
    busyMax: round(Math.max(...busy), 2),
  };
  line(
    `key generation stall: DescribeKey p50 ${figures.idleP50} ms idle, ` +
      `p50 ${figures.busyP50} ms / max ${figures.busyMax} ms while ${STALL_KEYS} RSA_2048 keys were created`,
  );
  return figures;
}

// ---- (d) the KMS Instance API ------------------------------------------------

type Body = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Provisions a client key through the OpenAPI, as an application would (docs/kms-api.md). */
async function prepareInstance(url: string, instanceUrl: string): Promise<InstanceLoadJob> {
  const signer = new RequestSigner(ACCESS_KEY_ID, ACCESS_KEY_SECRET);
  const ok = async (action: string, params: Record<string, string> = {}): Promise<Body> => {
    const r = await call(url, signer, action, params);
    if (r.status !== 200) throw new Error(`${action} failed: ${JSON.stringify(r.body)}`);
    return r.body;
  };
  let instanceId: string | undefined;
  for (let i = 0; !instanceId; i++) {
    instanceId = (await ok('ListKmsInstances')).KmsInstances.KmsInstance[0]?.KmsInstanceId;
    if (!instanceId && i > 100) throw new Error('the server lists no KMS instance');
    if (!instanceId) await sleep(100);
  }
  const ca = (await ok('GetKmsInstance', { KmsInstanceId: instanceId })).KmsInstance
    .CaCertificateChainPem as string;
  const keyId = (await ok('CreateKey', { DKMSInstanceId: instanceId })).KeyMetadata.KeyId as string;
  await ok('CreateNetworkRule', { Name: 'loopback', SourcePrivateIp: '["127.0.0.1"]' });
  await ok('CreatePolicy', {
    Name: 'bench',
    Permissions: '["RbacPermission/Template/CryptoServiceKeyUser"]',
    Resources: `["key/${keyId}"]`,
    AccessControlRules: '{"NetworkRules":["loopback"]}',
  });
  await ok('CreateApplicationAccessPoint', { Name: 'bench', Policies: '["bench"]' });
  const password = `Bench-${randomBytes(6).toString('hex')}`;
  const clientKey = await ok('CreateClientKey', { AapName: 'bench', Password: password });
  return {
    url: instanceUrl,
    ca,
    connections: CONNECTIONS,
    seconds: WARMUP_SECONDS,
    keyId,
    clientKeyId: clientKey.ClientKeyId as string,
    privateKeyPem: privateKeyPemOfPkcs12(
      Buffer.from(clientKey.PrivateKeyData as string, 'base64'),
      password,
    ),
  };
}

/** Runs the instance load worker; `loadCpu` is the CPU seconds the worker used. */
async function instanceLoad(
  job: InstanceLoadJob,
): Promise<InstanceLoadResult & { loadCpu: number }> {
  const worker = fork(path.join(__dirname, 'instance-load-worker.js'), [JSON.stringify(job)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    let got: (InstanceLoadResult & { loadCpu: number }) | undefined;
    worker.on('message', (message) => {
      got = { ...(message as InstanceLoadResult), loadCpu: cpuSeconds(worker.pid) };
    });
    worker.once('error', reject);
    worker.once('exit', (code) =>
      got ? resolve(got) : reject(new Error(`instance load worker exited with ${code}`)),
    );
  });
}

async function benchInstance(): Promise<{ rps: number; p99: number; failed: number }> {
  line(
    `instance api, loopback TLS (${CONNECTIONS} keep-alive connections, ${HTTP_SECONDS} s ` +
      `after ${WARMUP_SECONDS} s warm-up; AdvanceGenerateDataKey, RSA verification per request):`,
  );
  const instancePort = await freePort();
  const server = await startKmsServer(['--instance-listen', `127.0.0.1:${instancePort}`]);
  stopping = false;
  try {
    const job = await prepareInstance(server.url, `https://127.0.0.1:${instancePort}`);
    const warm = await instanceLoad(job);
    if (warm.ok === 0 || warm.failed > 0) {
      throw new Error(`instance warm-up: ${warm.ok} ok, ${warm.failed} failed`);
    }
    line('  sanity: provisioned through the OpenAPI, warm-up all 200: ok');
    const before = cpuSeconds(server.child.pid);
    const r = await instanceLoad({ ...job, seconds: HTTP_SECONDS });
    const serverCpu = (cpuSeconds(server.child.pid) - before) / r.seconds;
    const rps = r.ok / r.seconds;
    line(
      `  kms    ${fmt(rps).padStart(7)} req/s (200 only)  latency p50 ${r.p50} ms, ` +
        `p99 ${r.p99} ms, max ${r.max} ms; failed ${r.failed}`,
    );
    line(
      `         CPU: server ${(serverCpu * 100).toFixed(0)}% of a core ` +
        `(${((serverCpu / rps) * 1e6).toFixed(0)} µs per request), ` +
        `load generator ${((r.loadCpu / r.seconds) * 100).toFixed(0)}% of a core`,
    );
    return { rps, p99: r.p99, failed: r.failed };
  } finally {
    stopping = true;
    await stopChild(server.child);
    rmSync(server.dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  line(
    `kms bench: node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ` +
      `load average ${loadAverage()}`,
  );
  const core = await benchCore();
  const { kms, bare, acs3, acs3Bare, stall } = await benchHttp();
  const instance = await benchInstance();
  const failures =
    [kms, acs3]
      .map((f) => f.result.non2xx + f.result.errors + f.result.timeouts)
      .reduce((a, b) => a + b) + instance.failed;
  const bareFailures = [bare, acs3Bare]
    .map((f) => f.result.non2xx + f.result.errors + f.result.timeouts)
    .reduce((a, b) => a + b);
  const summary = {
    core_ops_s: Math.round(core.generate),
    crypto_ops_s: Math.round(core.seal),
    core_vs_crypto: round(core.generate / core.seal, 3),
    http_rps: Math.round(kms.rps),
    http_p99_ms: kms.result.latency.p99,
    bare_rps: Math.round(bare.rps),
    http_vs_bare: round(kms.rps / bare.rps, 3),
    acs3_http_rps: Math.round(acs3.rps),
    acs3_http_p99_ms: acs3.result.latency.p99,
    acs3_bare_rps: Math.round(acs3Bare.rps),
    acs3_http_vs_bare: round(acs3.rps / acs3Bare.rps, 3),
    keygen_probe_idle_p50_ms: stall.idleP50,
    keygen_probe_p50_ms: stall.busyP50,
    keygen_probe_max_ms: stall.busyMax,
    instance_advance_rps: Math.round(instance.rps),
    instance_advance_p99_ms: instance.p99,
  };
  const goal = (ok: boolean) => (ok ? 'met' : 'MISSED');
  line('goals:');
  line(`  core_vs_crypto >= 0.8: ${goal(summary.core_vs_crypto >= 0.8)}`);
  line(
    `  http_rps >= 10000 with http_p99_ms < 10: ` +
      goal(summary.http_rps >= 10_000 && summary.http_p99_ms < 10),
  );
  line(`  http_vs_bare >= 0.5: ${goal(summary.http_vs_bare >= 0.5)}`);
  line(
    `  ACS3 costs http_vs_bare at most 10%: ` +
      goal(summary.acs3_http_vs_bare >= 0.9 * summary.http_vs_bare),
  );
  line(`load average at the end: ${loadAverage()}`);
  if (failures > 0 || bareFailures > 0) {
    line(
      `WARNING: ${failures} failed KMS requests and ${bareFailures} failed bare requests; ` +
        'the HTTP figures count 2xx only',
    );
    process.exitCode = 1;
  }
  line(JSON.stringify(summary));
}

main().catch((err: Error) => {
  console.error(`kms bench: ${err.stack ?? err.message}`);
  process.exit(1);
});

import { spawn } from 'node:child_process';
import * as paths from '../../src/api/paths';
import { buildCrds } from '../../src/api/crds';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import RPCClient from '@alicloud/pop-core';
import { KubeClient, isNotFound, type KubeObject } from '../../src/runtime/kube-client';
import { findNeedles, localEtcdEndpoint, needlesOf, readAllEtcd } from './leak-scan';
import { allOperatorLines, startOperatorProcess, type OperatorProcess } from './operator-process';
import { eventually, sleep } from './wait';

/**
 * Shared fixture of the operator suites (test/operator/*.cluster.test.ts).
 *
 * The operator watches MasterKeys and DataKeys cluster-wide, so two operators of
 * different suites (different operator namespaces, hence different KMS cores)
 * must never run at the same time: suites take a cross-process lock for their
 * whole duration, so Jest may still schedule them on parallel workers.
 */

export const REPO = path.resolve(__dirname, '../..');
export const CRDS = path.join(REPO, 'crds');
export const client = KubeClient.fromEnvironment();

export type Json = Record<string, unknown>;
export interface SecretObject extends KubeObject {
  type?: string;
  data?: Record<string, string>;
}
export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}
export interface DataKeyObject extends KubeObject {
  spec: Json;
  status?: {
    keyId?: string;
    keyVersionId?: string;
    flow?: string;
    ciphertextBlob?: string;
    currentGeneration?: number;
    lastRegenerationTime?: string;
    nextRegenerationTime?: string;
    generations?: GenerationEntry[];
    regenerateTokensSeen?: string[];
    conditions?: Condition[];
  };
}

/** One entry of the Secret's `generations` JSON and of status.generations. */
export interface GenerationEntry {
  generation: number;
  keyVersionId: string;
  flow: string;
  ciphertextBlob: string;
  creationTime: string;
}

/** The keys of a Standard-flow DataKey Secret (layout 2), sorted. */
export const STANDARD_SECRET_KEYS = [
  'ciphertextBlob',
  'encryptionContext',
  'flow',
  'generation',
  'generations',
  'keyId',
  'keyVersionId',
];

/** The Secret's `generations` (layout 2). */
export const generationsOf = (secret: SecretObject): GenerationEntry[] =>
  JSON.parse(decode(secret.data?.generations)) as GenerationEntry[];

export const dataKeysPath = (ns: string) => paths.dataKeysPath(ns);
export const masterKeysPath = paths.masterKeysPath();
export const secretsPath = (ns: string) => paths.secretsPath(ns);

let cacheDir: string | undefined;
const kubectlCache = () =>
  (cacheDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'datakey-kubectl-cache-')));
/** Removed last: the suite's own afterAll still runs kubectl after other teardown. */
function removeKubectlCache(): void {
  if (cacheDir) fs.rmSync(cacheDir, { recursive: true, force: true });
  cacheDir = undefined;
}
process.once('exit', removeKubectlCache);

export function kubectlBinary(): string {
  return process.env.DATAKEY_KUBECTL ?? 'kubectl';
}

export interface KubectlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real kubectl against the test cluster. */
export function kubectl(
  args: string[],
  input?: string,
  timeoutMs = 120_000,
): Promise<KubectlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      kubectlBinary(),
      // A discovery cache of this file only: a CRD changed by an earlier run is seen at once.
      ['--kubeconfig', process.env.KUBECONFIG as string, '--cache-dir', kubectlCache(), ...args],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

/** kubectl that must succeed. */
export async function kubectlOk(args: string[], input?: string): Promise<string> {
  const r = await kubectl(args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** `kubectl apply -f -` of objects (sent as a JSON v1 List). */
/** Applies the test-only CRD variant that allows rotation intervals under 7 days. */
export async function applyShortRotationCrds(): Promise<void> {
  await kubectlOk(
    ['apply', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: buildCrds({ minRotationSeconds: 1 }).map(({ crd }) => crd),
    }),
  );
}

export function applyObjects(objects: Json[], extraArgs: string[] = []): Promise<KubectlResult> {
  return kubectl(
    ['apply', ...extraArgs, '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
  );
}

export function masterKey(name: string, spec: Json = {}): Json {
  return { apiVersion: 'kms.datakey.io/v1alpha1', kind: 'MasterKey', metadata: { name }, spec };
}

export function dataKey(namespace: string, name: string, spec: Json): Json {
  return {
    apiVersion: 'kms.datakey.io/v1alpha1',
    kind: 'DataKey',
    metadata: { name, namespace },
    spec,
  };
}

export function readyOf(object: { status?: { conditions?: Condition[] } } | undefined) {
  return object?.status?.conditions?.find((c) => c.type === 'Ready');
}

export async function getOrUndefined<T extends KubeObject>(p: string): Promise<T | undefined> {
  try {
    return await client.get<T>(p);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Waits until the object's Ready condition has `status` (and `reason`, when given). */
export function waitCondition(
  p: string,
  status: string,
  reason?: string,
  timeoutMs = 60_000,
): Promise<Condition> {
  return eventually(`${p} Ready=${status}${reason ? ` (${reason})` : ''}`, timeoutMs, async () => {
    const c = readyOf(await getOrUndefined<DataKeyObject>(p));
    return c && c.status === status && (!reason || c.reason === reason) ? c : undefined;
  });
}

export async function listDataKeys(ns: string): Promise<DataKeyObject[]> {
  return (await client.list<DataKeyObject>(dataKeysPath(ns))).items;
}

export async function waitAllReady(ns: string, count: number, timeoutMs: number) {
  return eventually(`${count} DataKeys Ready in ${ns}`, timeoutMs, async () => {
    const items = await listDataKeys(ns);
    const ready = items.filter((d) => readyOf(d)?.status === 'True');
    return items.length === count && ready.length === count ? items : undefined;
  });
}

export const decode = (v: string | undefined) => Buffer.from(v ?? '', 'base64').toString('utf8');

/** Events of an object (by name) in a namespace, with the given reason. */
export async function eventsFor(ns: string, name: string, reason: string): Promise<Json[]> {
  const list = await client.list<KubeObject & Json>(`/api/v1/namespaces/${ns}/events`);
  return list.items.filter((e) => (e.involvedObject as Json).name === name && e.reason === reason);
}

/** Plaintexts (base64) the tests obtained through Decrypt, for the leak scan. */
export const obtainedPlaintexts = new Set<string>();

/**
 * Decrypts a DataKey Secret's current generation through the operator's KMS API
 * with pop-core, as an application would: the Secret's values go to Decrypt
 * (with the stored context, Standard flow) or AdvanceDecrypt (with the stored
 * Aad, Advance flow) unchanged.
 */
export function decryptSecret(op: OperatorProcess, secret: SecretObject): Promise<Buffer> {
  const data = secret.data ?? {};
  return decryptBlob(op, secret, decode(data.flow), decode(data.ciphertextBlob));
}

/** Every kept generation of a Secret, decrypted through the KMS API: generation → plaintext. */
export async function decryptGenerations(
  op: OperatorProcess,
  secret: SecretObject,
): Promise<Map<number, Buffer>> {
  const out = new Map<number, Buffer>();
  for (const g of generationsOf(secret)) {
    out.set(g.generation, await decryptBlob(op, secret, g.flow, g.ciphertextBlob));
  }
  return out;
}

/** A pop-core client of the operator's KMS API (`--kms-listen`), with its credential. */
export function kmsClient(op: OperatorProcess): RPCClient {
  return new RPCClient({
    endpoint: op.kmsUrl as string,
    apiVersion: '2016-01-20',
    accessKeyId: op.accessKeyId,
    accessKeySecret: op.accessKeySecret,
  });
}

async function decryptBlob(
  op: OperatorProcess,
  secret: SecretObject,
  flow: string,
  ciphertextBlob: string,
): Promise<Buffer> {
  const pop = kmsClient(op);
  const data = secret.data ?? {};
  const advance = flow === 'Advance';
  const r = await pop.request<{ Plaintext: string; KeyId: string; KeyVersionId: string }>(
    advance ? 'AdvanceDecrypt' : 'Decrypt',
    advance
      ? { CiphertextBlob: ciphertextBlob, Aad: decode(data.aad) }
      : { CiphertextBlob: ciphertextBlob, EncryptionContext: decode(data.encryptionContext) },
    { method: 'POST' },
  );
  obtainedPlaintexts.add(r.Plaintext);
  return Buffer.from(r.Plaintext, 'base64');
}

// ---------------------------------------------------------------- the lock

const LOCK = path.join(
  os.tmpdir(),
  `datakey-operator-tests-${createHash('sha256')
    .update(process.env.KUBECONFIG ?? '')
    .digest('hex')
    .slice(0, 12)}.lock`,
);

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function acquireLock(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      fs.mkdirSync(LOCK);
      fs.writeFileSync(path.join(LOCK, 'pid'), String(process.pid));
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = NaN;
    try {
      holder = Number(fs.readFileSync(path.join(LOCK, 'pid'), 'utf8'));
    } catch {
      // being written, or being released
    }
    if (Number.isInteger(holder) && holder > 0 && !pidAlive(holder)) {
      fs.rmSync(LOCK, { recursive: true, force: true }); // stale: its holder died
      continue;
    }
    if (Date.now() > deadline) throw new Error(`operator test lock ${LOCK} held by pid ${holder}`);
    await sleep(500);
  }
}

function releaseLock(): void {
  try {
    if (fs.readFileSync(path.join(LOCK, 'pid'), 'utf8') === String(process.pid)) {
      fs.rmSync(LOCK, { recursive: true, force: true });
    }
  } catch {
    // not ours
  }
}

// ---------------------------------------------------------------- the suite

export interface OperatorSuite {
  /** Unique id of this suite run: prefix of its namespaces and MasterKeys. */
  id: string;
  /** The operator's own namespace. */
  operatorNs: string;
  /** A namespace for the suite's DataKeys. */
  ns: string;
  /** Unique MasterKey name. */
  mk(name: string): string;
  /** Starts an operator of this suite (KMS API on by default). */
  start(options?: {
    kms?: boolean;
    args?: string[];
    kubeconfig?: string;
    startedMessage?: string;
    env?: NodeJS.ProcessEnv;
  }): Promise<OperatorProcess>;
  operators: OperatorProcess[];
  /** Extra cluster-scoped MasterKeys / namespaces to clean up (e.g. fixed example names). */
  extraMasterKeys: string[];
  extraNamespaces: string[];
}

/**
 * Registers beforeAll/afterAll: lock, CRDs applied with kubectl, namespaces; on
 * the way out DataKeys, MasterKeys (finalizers released by the still-running
 * operator, stripped only as a last resort), operators and namespaces go away.
 */
export function useOperatorSuite(name: string): OperatorSuite {
  const id = `${name}-${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
  const suite: OperatorSuite = {
    id,
    operatorNs: `${id}-op`,
    ns: `${id}-app`,
    mk: (n) => `${id}-${n}`,
    operators: [],
    extraMasterKeys: [],
    extraNamespaces: [],
    async start(options = {}) {
      const op = await startOperatorProcess({
        namespace: suite.operatorNs,
        kms: options.kms ?? true,
        args: options.args,
        kubeconfig: options.kubeconfig,
        startedMessage: options.startedMessage,
        env: options.env,
      });
      suite.operators.push(op);
      return op;
    },
  };

  beforeAll(async () => {
    await acquireLock(900_000);
    await kubectlOk(['apply', '-f', CRDS]);
    await kubectlOk(['wait', '--for=condition=Established', 'crd', '--all', '--timeout=60s']);
    await client.create('/api/v1/namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: suite.ns },
    });
  }, 960_000);

  afterAll(async () => {
    try {
      await cleanup(suite);
    } finally {
      await Promise.all(suite.operators.map((op) => op.stop()));
      removeKubectlCache();
      releaseLock();
    }
  }, 120_000);

  return suite;
}

async function cleanup(suite: OperatorSuite): Promise<void> {
  const namespaces = [suite.ns, ...suite.extraNamespaces];
  for (const ns of namespaces) {
    await kubectl(['delete', 'datakeys', '--all', '-n', ns, '--wait=false']);
  }
  const all = await client.list<KubeObject>(masterKeysPath);
  const mine = all.items
    .map((m) => m.metadata.name)
    .filter((n) => n.startsWith(`${suite.id}-`) || suite.extraMasterKeys.includes(n));
  for (const n of mine) await kubectl(['delete', 'masterkey', n, '--wait=false']);
  // A running leader releases the finalizers once the DataKeys are gone.
  const leaderAlive = suite.operators.some((op) => op.alive());
  const deadline = Date.now() + (leaderAlive ? 30_000 : 0);
  for (;;) {
    const left = (await client.list<KubeObject>(masterKeysPath)).items.filter((m) =>
      mine.includes(m.metadata.name),
    );
    if (left.length === 0) break;
    if (Date.now() > deadline) {
      for (const m of left) {
        await kubectl([
          'patch',
          'masterkey',
          m.metadata.name,
          '--type=merge',
          '-p',
          '{"metadata":{"finalizers":null}}',
        ]);
      }
      break;
    }
    await sleep(500);
  }
  for (const ns of [...namespaces, suite.operatorNs]) {
    await kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found']);
  }
}

/**
 * examples/ uses fixed names (MasterKey payments, namespace shop), in several
 * suites: removes what an earlier suite or an aborted run left, the MasterKey's
 * finalizer stripped if no operator releases it.
 */
export async function removeExampleObjects(): Promise<void> {
  await kubectl(['delete', 'datakeys', '--all', '-n', 'shop', '--ignore-not-found']);
  await kubectl(['delete', 'masterkey', 'payments', '--ignore-not-found', '--wait=false']);
  await kubectl([
    'patch',
    'masterkey',
    'payments',
    '--type=merge',
    '-p',
    '{"metadata":{"finalizers":null}}',
  ]);
  await eventually('payments gone', 30_000, async () =>
    (await getOrUndefined(`${masterKeysPath}/payments`)) ? undefined : true,
  );
  // Another suite's cleanup may have left shop Terminating (deleted with
  // --wait=false): nothing can be created in it until it is gone.
  await eventually('namespace shop not terminating', 120_000, async () =>
    (await getOrUndefined('/api/v1/namespaces/shop'))?.metadata.deletionTimestamp
      ? undefined
      : true,
  );
}

export { allOperatorLines };

/**
 * The last tests of a suite: no plaintext the suite obtained through Decrypt
 * appears in any operator log line or (local control plane only) in etcd.
 * `control` is a Secret whose ciphertext must be found in etcd, proving the
 * scan sees Secret data at all.
 */
export function leakScanTests(suite: OperatorSuite, control: () => SecretObject | undefined): void {
  test('leak scan: no plaintext data key in any operator log line or /metrics', async () => {
    expect(obtainedPlaintexts.size).toBeGreaterThan(0);
    expect(allOperatorLines.length).toBeGreaterThan(0);
    const needles = needlesOf(obtainedPlaintexts);
    expect(findNeedles(Buffer.from(allOperatorLines.join('\n')), needles)).toEqual([]);
    const alive = suite.operators.filter((op) => op.alive());
    expect(alive.length).toBeGreaterThan(0);
    for (const op of alive) {
      expect(findNeedles(Buffer.from(await op.metrics()), needles)).toEqual([]);
    }
  });

  const local = process.env.DATAKEY_LOCAL_CLUSTER === '1';
  if (!local) {
    process.stderr.write('[operator tests] not the local control plane: etcd leak scan skipped\n');
  }
  (local ? test : test.skip)('leak scan: no plaintext data key in any etcd value', async () => {
    expect(obtainedPlaintexts.size).toBeGreaterThan(0);
    const { count, all } = await readAllEtcd(localEtcdEndpoint());
    expect(count).toBeGreaterThan(50);
    // The blob as base64 text (Secret layout 2 and status both store that string).
    const known = decode(control()?.data?.ciphertextBlob);
    expect(known).not.toBe('');
    const hex = Buffer.from(known, 'base64').toString('hex');
    // Positive control: the scan does see Secret data and status (the blob's base64 form).
    expect(findNeedles(all, needlesOf([known]))).toEqual(expect.arrayContaining([`base64:${hex}`]));
    expect(findNeedles(all, needlesOf(obtainedPlaintexts))).toEqual([]);
  });
}

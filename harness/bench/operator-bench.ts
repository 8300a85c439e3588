// Operator benchmark (figures, not a test): npm run bench:operator
//
// Starts (or reuses) the local control plane, installs the CRDs, runs the operator
// as a child process in a fresh namespace, creates one MasterKey, then creates
// BENCH_N DataKeys (default 1000) concurrently through the API into a fresh
// namespace and measures the time until all of them are Ready, the operator's
// peak RSS and the API requests it made. Then, in the same run and against the
// same API server:
// - restart: the operator is stopped and started again over the N Ready DataKeys;
//   a watch of the namespace counts every write to its DataKeys, Secrets and
//   Events (there must be none) while the new operator reaches steady state
//   (every DataKey reconciled once), compared with one full list of both;
// - re-wrap: one rotation, timed until all N are on the new primary, with the
//   restarted operator's re-wrap rate unlimited (--rewrap-rate 0);
// - floor: with the operator stopped, one KubeClient (the operator's own client
//   settings) creates N Secrets and merge-patches N DataKey statuses, each as large
//   as the operator's, with the operator's workers as concurrency: the 2N writes
//   any correct design needs. ready_vs_floor = ready_s / floor_s.
// Progress goes to stderr; the last line on stdout is one JSON object (see Result).
//
// Environment: BENCH_N (DataKeys), BENCH_CONCURRENCY (creates in flight, default 50),
// BENCH_NODE_FLAGS (node's flags for the operator; default the image entrypoint's),
// BENCH_WORKERS (the operator's --workers and the floor's concurrency; default the operator's),
// BENCH_TIMEOUT_S (wait for Ready, default 300), BENCH_CPU_PROF=DIR (run the
// operator under node --cpu-prof, profiles written to DIR on exit and summarized
// on stderr: where the operator's CPU went).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { API_VERSION, LABEL_DATAKEY, type DataKey, type MasterKey } from '../../src/api/types';
import { dataKeysPath, masterKeysPath } from '../../src/api/paths';
import { down, up } from '../devcluster/cluster';
import { repoRoot } from '../devcluster/paths';
import { KubeClient, isNotFound, type KubeObject } from '../../src/runtime/kube-client';
import { eventually, freePort, httpGet, sleep } from '../../src/common/wait';
import { summarizeCpuProfiles } from './cpu-profile';
import { DEFAULT_WORKERS } from '../../src/operator/operator';

const run = promisify(execFile);

const N = intEnv('BENCH_N', 1000);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 50);
const TIMEOUT_MS = intEnv('BENCH_TIMEOUT_S', 300) * 1000;
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;
/** The operator's reconcile workers (--workers), and the floor's concurrency. */
const OPERATOR_WORKERS = intEnv('BENCH_WORKERS', DEFAULT_WORKERS);
const WORKER_ARGS = process.env.BENCH_WORKERS ? ['--workers', String(OPERATOR_WORKERS)] : [];

/**
 * Node's flags for the operator: those of the image's entrypoint (the Dockerfile's
 * ENTRYPOINT, which the chart runs), so that the benchmark measures what ships;
 * BENCH_NODE_FLAGS (space-separated, may be empty) replaces them for experiments.
 */
const NODE_FLAGS =
  process.env.BENCH_NODE_FLAGS !== undefined
    ? process.env.BENCH_NODE_FLAGS.split(/\s+/).filter(Boolean)
    : entrypointNodeFlags();

function entrypointNodeFlags(): string[] {
  const dockerfile = fs.readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8');
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile);
  if (!entrypoint) throw new Error('the Dockerfile has no ENTRYPOINT ["node", ..., "dist/cli.js"]');
  const argv = JSON.parse(entrypoint[1]) as string[];
  return argv.slice(1, argv.indexOf('dist/cli.js'));
}

const DATAKEYS = (ns: string) => dataKeysPath(ns);
const MASTERKEYS = masterKeysPath();

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d{1,7}$/.test(raw) || Number(raw) < 1)
    throw new Error(`${name} must be a positive integer`);
  return Number(raw);
}

function log(msg: string): void {
  process.stderr.write(`[bench:operator] ${msg}\n`);
}

const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

function metricValue(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** Sum of a counter's samples whose labels contain `labels` (e.g. controller="datakey"). */
function metricSum(text: string, name: string, labels: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} ([0-9.e+-]+)$`, 'gm'))) {
    if (m[1].includes(labels)) sum += Number(m[2]);
  }
  return sum;
}

function isReady(obj: { status?: { conditions?: { type: string; status: string }[] } }): boolean {
  return obj.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

/** Peak resident memory of a process, from /proc (VmHWM, sampled VmRSS as a fallback). */
class RssSampler {
  private peakKb = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.timer = setInterval(() => this.sample(), 100);
    this.timer.unref();
  }

  sample(): void {
    try {
      const status = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
      for (const field of ['VmHWM', 'VmRSS']) {
        const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
        if (m) this.peakKb = Math.max(this.peakKb, Number(m[1]));
      }
    } catch {
      // the process has exited; keep the last peak
    }
  }

  stop(): number {
    this.sample();
    clearInterval(this.timer);
    return this.peakKb / 1024;
  }
}

/** CPU seconds a process used so far (utime + stime), from /proc. */
function processCpuS(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/** Busy and total CPU time of the whole machine so far (all cores), from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const idle = v[3] + v[4];
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** PIDs of the control plane's processes, by name, from the devcluster's state file (if any). */
function controlPlanePids(stateDir: string): Record<string, number> {
  try {
    const state = JSON.parse(fs.readFileSync(path.join(stateDir, 'state.json'), 'utf8')) as {
      processes?: { name: string; pid: number }[];
    };
    return Object.fromEntries((state.processes ?? []).map((p) => [p.name, p.pid]));
  } catch {
    return {};
  }
}

/** Runs `fn` over 0..n-1 with at most `limit` calls in flight. */
async function pool(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}

interface Operator {
  child: ChildProcess;
  metricsUrl: string;
  exited: Promise<number | null>;
}

function startOperator(
  kubeconfig: string,
  namespace: string,
  port: number,
  logFile: string,
  extraArgs: string[] = [],
) {
  const out = fs.openSync(logFile, 'a');
  const nodeArgs = [
    ...NODE_FLAGS,
    ...(CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(CPU_PROF_DIR)}`] : []),
  ];
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      path.join(repoRoot, 'dist', 'cli.js'),
      'operator',
      '--kubeconfig',
      kubeconfig,
      '--namespace',
      namespace,
      '--metrics-listen',
      `127.0.0.1:${port}`,
      ...WORKER_ARGS,
      ...extraArgs,
    ],
    { stdio: ['ignore', out, out] },
  );
  fs.closeSync(out);
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { child, metricsUrl: `http://127.0.0.1:${port}/metrics`, exited } satisfies Operator;
}

async function stopOperator(op: Operator): Promise<void> {
  if (op.child.exitCode !== null || op.child.signalCode !== null) return;
  op.child.kill('SIGTERM');
  const code = await Promise.race([op.exited, sleep(20_000).then(() => 'timeout' as const)]);
  if (code === 'timeout') {
    log('operator ignored SIGTERM for 20s: sending SIGKILL');
    op.child.kill('SIGKILL');
    await op.exited;
  }
}

async function operatorMetric(op: Operator, name: string): Promise<number> {
  const { body } = await httpGet(op.metricsUrl);
  const value = metricValue(body, name);
  if (value === undefined) throw new Error(`the operator exposes no ${name}`);
  return value;
}

/** The operator's answered API requests, by `verb resource code` (its request metric's labels). */
async function operatorRequestTallies(op: Operator): Promise<Map<string, number>> {
  const { body } = await httpGet(op.metricsUrl);
  const tallies = new Map<string, number>();
  for (const [, labelText, n] of body.matchAll(
    /^datakey_kube_api_requests_total\{([^}]*)\} (\S+)$/gm,
  )) {
    const labels = Object.fromEntries(
      [...labelText.matchAll(/(\w+)="([^"]*)"/g)].map(([, name, value]) => [name, value]),
    );
    tallies.set(`${labels.verb} ${labels.resource} ${labels.code}`, Number(n));
  }
  return tallies;
}

/** Seconds the operator spent in garbage collection so far (prom-client's GC histogram). */
async function operatorGcSeconds(op: Operator): Promise<number> {
  const { body } = await httpGet(op.metricsUrl);
  return metricSum(body, 'datakey_process_nodejs_gc_duration_seconds_sum', '');
}

const operatorRequests = async (op: Operator) =>
  [...(await operatorRequestTallies(op)).values()].reduce((a, b) => a + b, 0);

/** Requests made between two tallies, by kind, largest first. */
function requestsBetween(before: Map<string, number>, after: Map<string, number>) {
  const made: Record<string, number> = {};
  for (const [kind, n] of [...after].sort((a, b) => b[1] - a[1])) {
    if (n > (before.get(kind) ?? 0)) made[kind] = n - (before.get(kind) ?? 0);
  }
  return made;
}

/**
 * Requests of the create path: writes and reads of DataKeys, Secrets and Events.
 * Not: lease renewals (every 2 s) and lists (the key store's reload every 10 s,
 * an informer's re-list), which run on a clock, not per DataKey.
 */
function createPathRequests(made: Record<string, number>): number {
  let sum = 0;
  for (const [kind, n] of Object.entries(made)) {
    const [verb, resource] = kind.split(' ');
    if (verb !== 'list' && /^(datakeys|secrets|events)(\/|$)/.test(resource)) sum += n;
  }
  return sum;
}

/** Waits until the operator's API request count has not moved for three samples. */
async function quietRequests(op: Operator): Promise<number> {
  let requests = await operatorRequests(op);
  for (let quiet = 0, i = 0; quiet < 3 && i < 50; i++) {
    await sleep(200);
    const now = await operatorRequests(op);
    quiet = now === requests ? quiet + 1 : 0;
    requests = now;
  }
  return requests;
}

async function deleteAndWait(client: KubeClient, path: string, timeoutMs: number) {
  try {
    await client.delete(path);
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  await eventually(`${path} to be gone`, timeoutMs, async () => {
    try {
      await client.get(path);
      return undefined;
    } catch (err) {
      if (isNotFound(err)) return true;
      throw err;
    }
  });
}

/**
 * Rotates the master key (annotation) and times until every DataKey is on the
 * new primary version in the Advance flow, at the running operator's re-wrap rate.
 */
async function timeRewrap(
  client: KubeClient,
  masterKeyName: string,
  dataNs: string,
): Promise<number | null> {
  const path = masterKeysPath(masterKeyName);
  const before = (await client.get<KubeObject & { status?: { primaryKeyVersion?: string } }>(path))
    .status?.primaryKeyVersion;
  const t0 = performance.now();
  await client.mergePatch(path, {
    metadata: { annotations: { 'kms.datakey.io/rotate': 'bench' } },
  });
  const deadline = Date.now() + TIMEOUT_MS;
  let primary: string | undefined;
  while (Date.now() < deadline) {
    if (!primary || primary === before) {
      primary = (await client.get<KubeObject & { status?: { primaryKeyVersion?: string } }>(path))
        .status?.primaryKeyVersion;
    }
    if (primary && primary !== before) {
      const list = await client.list<DataKey & KubeObject>(DATAKEYS(dataNs));
      const moved = list.items.filter(
        (d) => d.status?.keyVersionId === primary && d.status?.flow === 'Advance',
      );
      if (moved.length === N) {
        const seconds = (performance.now() - t0) / 1000;
        log(`all ${N} re-wrapped to the new primary ${seconds.toFixed(2)}s after the rotation`);
        return seconds;
      }
    }
    // A full list of N DataKeys is itself load on the API server: look less often at large N.
    await sleep(Math.max(250, N / 10));
  }
  log(`re-wrap did not finish within ${TIMEOUT_MS / 1000}s`);
  return null;
}

interface Result {
  n: number;
  workers: number;
  /** Node's flags the operator ran with (the image's entrypoint's unless BENCH_NODE_FLAGS). */
  node_flags: string;
  /** First create to all N Ready. */
  ready_s: number | null;
  per_s: number | null;
  /** The raw write floor in the same run (2N writes at the operator's concurrency). */
  floor_s: number;
  ready_vs_floor: number | null;
  /** Peak RSS of the operator during the creates, and its RSS once leading, before them. */
  rss_mb: number;
  rss_idle_mb: number;
  heap_used_mb: number;
  api_requests: number;
  requests_per_datakey: number;
  /** Requests to DataKeys, Secrets and Events (no lists) over N: the create path's cost. */
  create_path_requests_per_datakey: number;
  /** The requests during the creates by `verb resource code`. */
  requests: Record<string, number>;
  /** CPU seconds during the creates: the operator, kube-apiserver, etcd; machine busy %. */
  cpu_s: Record<string, number>;
  machine_busy_pct: number;
  /** The operator's garbage collection pauses during the creates (all kinds), seconds. */
  gc_s: number;
  /** Operator restarted over the N Ready DataKeys. */
  restart: RestartCost | null;
  /** Seconds to re-wrap all N after one rotation at an unlimited re-wrap rate. */
  rewrap_s: number | null;
  load_avg: string;
}

interface RestartCost {
  /** Writes seen by watches: DataKeys and Secrets in the data namespace, Events anywhere. */
  writes: Record<string, number>;
  /** Process start to every DataKey reconciled once. */
  steady_s: number;
  /** Process start to its metrics answering (booted, key store read, caches synced). */
  serving_s: number;
  /** One full list of the DataKeys and the labelled Secrets (both at once, as the informers do). */
  list_s: number;
  steady_vs_list: number;
  /** API requests the restarted operator made up to steady state (lease renewals included). */
  requests: number;
  rss_mb: number;
}

/** Counts ADDED/MODIFIED/DELETED events of some collections from now on. */
async function countWrites(client: KubeClient, paths: Record<string, string>) {
  const writes: Record<string, number> = {};
  const watches: AbortController[] = [];
  for (const [what, collection] of Object.entries(paths)) {
    writes[what] = 0;
    const { resourceVersion } = (await client.list(collection, { limit: 1 })).metadata;
    watches.push(
      await client.watch(
        collection,
        { watch: true, resourceVersion },
        (type) => {
          if (type !== 'BOOKMARK') writes[what]++;
        },
        () => undefined,
      ),
    );
  }
  return { writes, stop: () => watches.forEach((w) => w.abort()) };
}

/**
 * Starts a second operator over the N Ready DataKeys and times it to steady
 * state: leading, and every DataKey reconciled once. No write may happen.
 */
async function measureRestart(
  client: KubeClient,
  dataNs: string,
  start: () => Promise<Operator>,
): Promise<{ operator: Operator; cost: RestartCost }> {
  const counter = await countWrites(client, {
    datakeys: DATAKEYS(dataNs),
    secrets: `/api/v1/namespaces/${dataNs}/secrets`,
    events: '/api/v1/events',
  });
  const listStarted = performance.now();
  await Promise.all([
    client.list(dataKeysPath()),
    client.list('/api/v1/secrets', { labelSelector: LABEL_DATAKEY }),
  ]);
  const listS = (performance.now() - listStarted) / 1000;

  const t0 = performance.now();
  const operator = await start();
  const sampler = new RssSampler(operator.child.pid as number);
  let servingS = 0;
  await eventually('the restarted operator to reach steady state', TIMEOUT_MS, async () => {
    if (operator.child.exitCode !== null) throw new Error('the restarted operator exited');
    const body = await httpGet(operator.metricsUrl).then(
      (r) => r.body,
      () => '',
    );
    if (body && servingS === 0) servingS = (performance.now() - t0) / 1000;
    return metricValue(body, 'datakey_leader') === 1 &&
      metricSum(body, 'datakey_reconcile_total', 'controller="datakey"') >= N
      ? true
      : undefined;
  });
  const steadyS = (performance.now() - t0) / 1000;
  const requests = await quietRequests(operator);
  await sleep(2000); // late writes would show in the watches now
  counter.stop();
  const cost: RestartCost = {
    writes: counter.writes,
    steady_s: round(steadyS, 2),
    serving_s: round(servingS, 2),
    list_s: round(listS, 2),
    steady_vs_list: round(steadyS / listS, 2),
    requests,
    rss_mb: round(sampler.stop(), 1),
  };
  log(`restart: ${JSON.stringify(cost)}`);
  return { operator, cost };
}

/**
 * The raw write floor: with no operator running, a fresh client with the
 * operator's settings creates one Secret per DataKey (in a namespace of its
 * own, with the same data as the operator's) and merge-patches each DataKey's
 * status (the same status, resourceVersion-guarded, one condition message
 * changed so that it is a real write), `OPERATOR_WORKERS` DataKeys at a time.
 */
async function measureFloor(kubeconfig: string, dataNs: string, floorNs: string): Promise<number> {
  const client = KubeClient.fromEnvironment(kubeconfig);
  const dataKeys = (await client.list<DataKey & KubeObject>(DATAKEYS(dataNs))).items;
  const secrets = new Map(
    (await client.list<KubeObject>(`/api/v1/namespaces/${dataNs}/secrets`)).items.map((s) => [
      s.metadata.name,
      s,
    ]),
  );
  const t0 = performance.now();
  await pool(dataKeys.length, OPERATOR_WORKERS, async (i) => {
    const dk = dataKeys[i];
    const template = secrets.get(dk.spec.secretName ?? dk.metadata.name);
    await client.create(`/api/v1/namespaces/${floorNs}/secrets`, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: dk.metadata.name, namespace: floorNs },
      type: template?.type,
      data: template?.data,
    });
    const status = dk.status ?? {};
    await client.mergePatch(`${DATAKEYS(dataNs)}/${dk.metadata.name}/status`, {
      metadata: { resourceVersion: dk.metadata.resourceVersion },
      status: {
        ...status,
        conditions: (status.conditions ?? []).map((c) => ({ ...c, message: `${c.message}.` })),
      },
    });
  });
  const floorS = (performance.now() - t0) / 1000;
  log(`floor: ${2 * dataKeys.length} writes in ${floorS.toFixed(2)}s`);
  return floorS;
}

async function main(): Promise<Result> {
  const id = randomBytes(3).toString('hex');
  const operatorNs = `opbench-op-${id}`;
  const dataNs = `opbench-dk-${id}`;
  const floorNs = `opbench-floor-${id}`;
  const masterKeyName = `opbench-${id}`;
  log(`N=${N}, ${CONCURRENCY} creates in flight; load average ${load()}`);

  // The control plane only: the operator needs no node, and the machine's one node is shared.
  const cluster = await up({ node: false, log: (m) => log(`devcluster: ${m}`) });
  log(`control plane ${cluster.reused ? 'reused' : 'started'}; kubeconfig ${cluster.kubeconfig}`);
  const client = KubeClient.fromEnvironment(cluster.kubeconfig);
  const kubectl = (...args: string[]) =>
    run(cluster.binaries.kubectl, ['--kubeconfig', cluster.kubeconfig, ...args]);

  let operator: Operator | undefined;
  let sampler: RssSampler | undefined;
  let masterKeyCreated = false;
  let dataNsCreated = false;
  let floorNsCreated = false;
  try {
    await kubectl('apply', '--server-side', '--force-conflicts', '-f', path.join(repoRoot, 'crds'));
    await kubectl(
      'wait',
      '--for=condition=Established',
      '--timeout=60s',
      'crd/datakeys.kms.datakey.io',
      'crd/masterkeys.kms.datakey.io',
    );

    const logFile = path.join(os.tmpdir(), `opbench-operator-${id}.log`);
    const profileSince = Date.now();
    operator = startOperator(cluster.kubeconfig, operatorNs, await freePort(), logFile);
    const pid = operator.child.pid as number;
    sampler = new RssSampler(pid);
    log(`operator pid ${pid} in namespace ${operatorNs}; log ${logFile}`);
    const op = operator;
    void op.exited.then((code) => log(`operator exited (${code})`));
    await eventually('the operator to lead', 60_000, async () => {
      if (op.child.exitCode !== null) throw new Error(`operator exited; see ${logFile}`);
      const { body } = await httpGet(op.metricsUrl);
      return metricValue(body, 'datakey_leader') === 1 ? true : undefined;
    });

    const masterKey: MasterKey = {
      apiVersion: API_VERSION,
      kind: 'MasterKey',
      metadata: { name: masterKeyName },
      spec: { description: 'bench:operator' },
    };
    await client.create(MASTERKEYS, masterKey);
    masterKeyCreated = true;
    await eventually('the MasterKey to be Ready', 60_000, async () =>
      isReady(await client.get<MasterKey & KubeObject>(`${MASTERKEYS}/${masterKeyName}`))
        ? true
        : undefined,
    );
    log(`MasterKey ${masterKeyName} Ready`);
    sampler.sample();
    const rssIdleMb = sampler.stop();
    sampler = new RssSampler(pid);

    await client.create('/api/v1/namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: dataNs },
    });
    dataNsCreated = true;

    // Watch the (empty) namespace before the first create: Ready is seen as it happens.
    const ready = new Set<string>();
    let allReady!: () => void;
    const allReadyP = new Promise<void>((resolve) => (allReady = resolve));
    let readyAt = 0;
    const startList = await client.list(DATAKEYS(dataNs));
    const watch = await client.watch(
      DATAKEYS(dataNs),
      { watch: true, resourceVersion: startList.metadata.resourceVersion },
      (type, obj) => {
        if (
          (type === 'ADDED' || type === 'MODIFIED') &&
          isReady(obj as { status?: DataKey['status'] })
        ) {
          ready.add(obj.metadata.name);
          if (ready.size === N && readyAt === 0) {
            readyAt = performance.now();
            allReady();
          }
        }
      },
      (err) => {
        if (readyAt === 0 && err) log(`watch ended: ${String(err)} (falling back to listing)`);
      },
    );

    const gcBefore = await operatorGcSeconds(operator);
    const talliesBefore = await operatorRequestTallies(operator);
    const requestsBefore = [...talliesBefore.values()].reduce((a, b) => a + b, 0);
    const loadBefore = load();
    const cpPids = controlPlanePids(cluster.stateDir);
    const cpuOf = () =>
      Object.fromEntries(Object.entries(cpPids).map(([name, p]) => [name, processCpuS(p)]));
    const cpuBefore = { machine: machineCpu(), operator: processCpuS(pid), controlPlane: cpuOf() };
    const t0 = performance.now();
    let created = 0;
    await pool(N, CONCURRENCY, async (i) => {
      const dataKey: DataKey = {
        apiVersion: API_VERSION,
        kind: 'DataKey',
        metadata: { name: `dk-${String(i).padStart(5, '0')}`, namespace: dataNs },
        spec: { masterKeyRef: { name: masterKeyName }, keySpec: 'AES_256' },
      };
      await client.create(DATAKEYS(dataNs), dataKey);
      created++;
    });
    const createdS = (performance.now() - t0) / 1000;
    log(`${created} DataKeys created in ${createdS.toFixed(2)}s; ${ready.size} Ready so far`);

    // Wait for the watch; list now and then as well, in case the watch ended early.
    const deadline = Date.now() + TIMEOUT_MS;
    let lastLog = Date.now();
    while (readyAt === 0 && Date.now() < deadline) {
      await Promise.race([allReadyP, sleep(5000)]);
      if (readyAt !== 0) break;
      const list = await client.list<DataKey & KubeObject>(DATAKEYS(dataNs));
      for (const dk of list.items) if (isReady(dk)) ready.add(dk.metadata.name);
      if (ready.size === N && readyAt === 0) readyAt = performance.now();
      if (Date.now() - lastLog >= 10_000) {
        log(`${ready.size}/${N} Ready after ${((performance.now() - t0) / 1000).toFixed(1)}s`);
        lastLog = Date.now();
      }
    }
    watch.abort();
    const readyS = readyAt === 0 ? null : (readyAt - t0) / 1000;
    const loadAfter = load();
    const machine = machineCpu();
    const busyPct =
      (100 * (machine.busy - cpuBefore.machine.busy)) /
      Math.max(1, machine.total - cpuBefore.machine.total);
    const operatorCpuS = processCpuS(pid) - cpuBefore.operator;
    const cpuS: Record<string, number> = { operator: round(operatorCpuS, 1) };
    for (const [name, seconds] of Object.entries(cpuOf()))
      cpuS[name] = round(seconds - cpuBefore.controlPlane[name], 1);
    const controlPlaneCpu = Object.entries(cpuOf())
      .map(([name, s]) => `${name} ${(s - cpuBefore.controlPlane[name]).toFixed(1)}`)
      .join(', ');
    log(
      `during the run: machine CPU ${busyPct.toFixed(0)}% busy over ${os.cpus().length} cores; ` +
        `CPU s: operator ${operatorCpuS.toFixed(1)}` +
        (controlPlaneCpu ? `, ${controlPlaneCpu}` : ''),
    );

    // Let trailing work (events, re-reconciles of the last updates) finish, then count.
    const apiRequests = (await quietRequests(operator)) - requestsBefore;
    const requestsMade = requestsBetween(talliesBefore, await operatorRequestTallies(operator));
    const gcS = (await operatorGcSeconds(operator)) - gcBefore;
    const rssMb = sampler.stop();
    sampler = undefined;
    const heapUsedMb =
      (await operatorMetric(operator, 'datakey_process_nodejs_heap_size_used_bytes')) / 2 ** 20;

    if (readyS === null) log(`only ${ready.size}/${N} Ready after ${TIMEOUT_MS / 1000}s`);
    else log(`all ${N} Ready ${readyS.toFixed(2)}s after the first create`);
    log(
      `operator: peak RSS ${rssMb.toFixed(1)} MB (${rssIdleMb.toFixed(1)} MB idle), heap used ` +
        `${heapUsedMb.toFixed(1)} MB, ${apiRequests} API requests ` +
        `(${(apiRequests / N).toFixed(2)} per DataKey); load average ${loadBefore} before, ${loadAfter} after`,
    );
    log(`requests during the creates: ${JSON.stringify(requestsMade)}`);

    let restart: RestartCost | null = null;
    let rewrapS: number | null = null;
    if (readyS !== null) {
      await stopOperator(operator);
      const restarted = await measureRestart(client, dataNs, async () => {
        operator = startOperator(cluster.kubeconfig, operatorNs, await freePort(), logFile, [
          '--rewrap-rate',
          '0',
        ]);
        return operator;
      });
      restart = restarted.cost;
      rewrapS = await timeRewrap(client, masterKeyName, dataNs);
    }
    await stopOperator(operator);

    await client.create('/api/v1/namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: floorNs },
    });
    floorNsCreated = true;
    const floorS = await measureFloor(cluster.kubeconfig, dataNs, floorNs);
    if (CPU_PROF_DIR) summarizeCpuProfiles(CPU_PROF_DIR, profileSince, log);

    return {
      n: N,
      workers: OPERATOR_WORKERS,
      node_flags: NODE_FLAGS.join(' '),
      ready_s: readyS === null ? null : round(readyS, 2),
      per_s: readyS === null ? null : round(N / readyS, 1),
      floor_s: round(floorS, 2),
      ready_vs_floor: readyS === null ? null : round(readyS / floorS, 2),
      rss_mb: round(rssMb, 1),
      rss_idle_mb: round(rssIdleMb, 1),
      heap_used_mb: round(heapUsedMb, 1),
      api_requests: apiRequests,
      requests_per_datakey: round(apiRequests / N, 2),
      create_path_requests_per_datakey: round(createPathRequests(requestsMade) / N, 3),
      requests: requestsMade,
      cpu_s: cpuS,
      gc_s: round(gcS, 2),
      machine_busy_pct: round(busyPct, 0),
      restart,
      rewrap_s: rewrapS === null ? null : round(rewrapS, 2),
      load_avg: loadAfter,
    };
  } finally {
    sampler?.stop();
    await cleanup();
  }

  async function cleanup(): Promise<void> {
    log('cleaning up');
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        log(`cleanup: ${what} failed: ${(err as Error).message}`);
      }
    };
    // DataKeys first (their Secrets go with them by owner reference): the MasterKey's
    // finalizer waits until none references it, and the operator does not keep
    // restoring Secrets into a namespace that is being terminated.
    if (dataNsCreated) {
      await step(`deleting the DataKeys in ${dataNs}`, async () => {
        await client.delete(DATAKEYS(dataNs));
        await eventually('the DataKeys to be gone', 120_000, async () =>
          (await client.list(DATAKEYS(dataNs), { limit: 1 })).items.length === 0 ? true : undefined,
        );
      });
      await step(`deleting namespace ${dataNs}`, () =>
        deleteAndWait(client, `/api/v1/namespaces/${dataNs}`, 180_000),
      );
    }
    if (floorNsCreated) {
      await step(`deleting namespace ${floorNs}`, () =>
        deleteAndWait(client, `/api/v1/namespaces/${floorNs}`, 180_000),
      );
    }
    if (masterKeyCreated) {
      await step(`deleting MasterKey ${masterKeyName}`, async () => {
        if (operator && operator.child.exitCode === null) {
          try {
            return await deleteAndWait(client, `${MASTERKEYS}/${masterKeyName}`, 60_000);
          } catch (err) {
            log(`MasterKey not finalized by the operator (${(err as Error).message})`);
          }
        }
        // Without a running operator nothing removes the finalizer: drop it here.
        await client.mergePatch(`${MASTERKEYS}/${masterKeyName}`, {
          metadata: { finalizers: null },
        });
        await deleteAndWait(client, `${MASTERKEYS}/${masterKeyName}`, 30_000);
      });
    }
    if (operator) await step('stopping the operator', () => stopOperator(operator as Operator));
    await step(`deleting namespace ${operatorNs}`, () =>
      deleteAndWait(client, `/api/v1/namespaces/${operatorNs}`, 120_000),
    );
    if (!cluster.reused) {
      await step('stopping the control plane', () =>
        down({ stateDir: cluster.stateDir, log: (m) => log(`devcluster: ${m}`) }),
      );
    }
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    if (result.ready_s === null) process.exitCode = 1;
  },
  (err: unknown) => {
    log(`failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);

// Operator benchmark (figures, not a test): npm run bench:operator
//
// Starts (or reuses) the local control plane, installs the CRDs, runs the operator
// as a child process in a fresh namespace, creates one MasterKey, then creates
// BENCH_N DataKeys (default 1000) concurrently through the API into a fresh
// namespace and measures the time until all of them are Ready, the operator's
// peak RSS and the API requests it made. Progress goes to stderr; the last line
// on stdout is one JSON object: {"n","ready_s","per_s","rss_mb","api_requests","rewrap_s"}
// (rewrap_s: seconds to re-wrap all N after one rotation, at the default rate).
//
// Environment: BENCH_N (DataKeys), BENCH_CONCURRENCY (creates in flight, default 50),
// BENCH_TIMEOUT_S (wait for Ready, default 300), BENCH_CPU_PROF=DIR (run the
// operator under node --cpu-prof, profile written to DIR on exit).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { API_VERSION, type DataKey, type MasterKey } from '../../src/api/types';
import { dataKeysPath, masterKeysPath } from '../../src/api/paths';
import { down, up } from '../devcluster/cluster';
import { repoRoot } from '../devcluster/paths';
import { KubeClient, isNotFound, type KubeObject } from '../../src/runtime/kube-client';
import { eventually, freePort, httpGet, sleep } from '../../src/common/wait';

const run = promisify(execFile);

const N = intEnv('BENCH_N', 1000);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 50);
const TIMEOUT_MS = intEnv('BENCH_TIMEOUT_S', 300) * 1000;
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;

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

function startOperator(kubeconfig: string, namespace: string, port: number, logFile: string) {
  const out = fs.openSync(logFile, 'a');
  const nodeArgs = CPU_PROF_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(CPU_PROF_DIR)}`]
    : [];
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

async function operatorRequests(op: Operator): Promise<number> {
  const { body } = await httpGet(op.metricsUrl);
  const value = metricValue(body, 'datakey_kube_api_requests_total');
  if (value === undefined)
    throw new Error('the operator exposes no datakey_kube_api_requests_total');
  return value;
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
 * new primary version in the Advance flow, at the operator's default re-wrap rate.
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
    await sleep(250);
  }
  log(`re-wrap did not finish within ${TIMEOUT_MS / 1000}s`);
  return null;
}

interface Result {
  n: number;
  ready_s: number | null;
  per_s: number | null;
  rss_mb: number;
  api_requests: number;
  rewrap_s: number | null;
}

async function main(): Promise<Result> {
  const id = randomBytes(3).toString('hex');
  const operatorNs = `opbench-op-${id}`;
  const dataNs = `opbench-dk-${id}`;
  const masterKeyName = `opbench-${id}`;
  log(`N=${N}, ${CONCURRENCY} creates in flight; load average ${load()}`);

  const cluster = await up({ log: (m) => log(`devcluster: ${m}`) });
  log(`control plane ${cluster.reused ? 'reused' : 'started'}; kubeconfig ${cluster.kubeconfig}`);
  const client = KubeClient.fromEnvironment(cluster.kubeconfig);
  const kubectl = (...args: string[]) =>
    run(cluster.binaries.kubectl, ['--kubeconfig', cluster.kubeconfig, ...args]);

  let operator: Operator | undefined;
  let sampler: RssSampler | undefined;
  let masterKeyCreated = false;
  let dataNsCreated = false;
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

    const requestsBefore = await operatorRequests(operator);
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
    const controlPlaneCpu = Object.entries(cpuOf())
      .map(([name, s]) => `${name} ${(s - cpuBefore.controlPlane[name]).toFixed(1)}`)
      .join(', ');
    log(
      `during the run: machine CPU ${busyPct.toFixed(0)}% busy over ${os.cpus().length} cores; ` +
        `CPU s: operator ${operatorCpuS.toFixed(1)}` +
        (controlPlaneCpu ? `, ${controlPlaneCpu}` : ''),
    );

    // Let trailing work (events, re-reconciles of the last updates) finish, then count.
    let requests = await operatorRequests(operator);
    for (let quiet = 0, i = 0; quiet < 3 && i < 50; i++) {
      await sleep(200);
      const now = await operatorRequests(operator);
      quiet = now === requests ? quiet + 1 : 0;
      requests = now;
    }
    const apiRequests = requests - requestsBefore;
    const rssMb = sampler.stop();
    sampler = undefined;

    if (readyS === null) log(`only ${ready.size}/${N} Ready after ${TIMEOUT_MS / 1000}s`);
    else log(`all ${N} Ready ${readyS.toFixed(2)}s after the first create`);
    log(
      `operator: peak RSS ${rssMb.toFixed(1)} MB, ${apiRequests} API requests ` +
        `(${(apiRequests / N).toFixed(2)} per DataKey); load average ${loadBefore} before, ${loadAfter} after`,
    );
    const rewrapS = readyS === null ? null : await timeRewrap(client, masterKeyName, dataNs);
    return {
      n: N,
      ready_s: readyS === null ? null : round(readyS, 2),
      per_s: readyS === null ? null : round(N / readyS, 1),
      rss_mb: round(rssMb, 1),
      api_requests: apiRequests,
      rewrap_s: rewrapS === null ? null : round(rewrapS, 2),
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

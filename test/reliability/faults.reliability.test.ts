// Faults of the control plane and of the operator's leadership, each while a
// burst of DataKeys is being created (and one during a re-wrap after a
// rotation): the API server killed and restarted, the API server and etcd
// frozen, the leading operator frozen past its lease, the watches cut with 410
// Gone forced. A watch records every DataKey Secret's ciphertexts for the whole
// run; at the end every recorded copy is opened: one data key per generation.
import * as paths from '../../src/api/paths';
import { ANNOTATION_ROTATE } from '../../src/api/types';
import { KubeApiError, type KubeObject } from '../../src/runtime/kube-client';
import { freeze, killAndRestart, whileFrozen } from '../helpers/control-plane-faults';
import {
  compactEtcdHistory,
  findNeedles,
  localEtcdEndpoint,
  needlesOf,
  readEtcdHistory,
} from '../helpers/leak-scan';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  allOperatorLines,
  client,
  dataKey,
  dataKeysPath,
  decryptSecret,
  listDataKeys,
  masterKey,
  masterKeysPath,
  obtainedPlaintexts,
  readyOf,
  useOperatorSuite,
  type DataKeyObject,
  type Json,
} from '../helpers/operator-suite';
import { recordFigures } from '../helpers/reliability-figures';
import { SecretHistory } from '../helpers/secret-history';
import { eventually, sleep } from '../helpers/wait';

const FULL = process.env.DATAKEY_RELIABILITY === 'full';
/** DataKeys per burst: the 300 in the full form, fewer in the short one. */
const BURST = FULL ? 300 : 30;
/** How long the API server or etcd stays frozen. */
const FREEZE_MS = FULL ? 30_000 : 10_000;
/** The operator's default lease (LeaderElector): a frozen leader is held past it. */
const LEASE_MS = 15_000;
const CONVERGE_TIMEOUT_MS = FULL ? 900_000 : 300_000;

const suite = useOperatorSuite('faults');
const history = new SecretHistory(client);
/** Every DataKey the API server acknowledged (created), by name. */
const acknowledged = new Set<string>();
/** Operators this file stopped or killed on purpose; any other exit is a crash. */
const endedOnPurpose = new Set<number>();
let mkName: string;
/** etcd's history as it was before the 410 test compacted it (the leak scan reads it too). */
let historyBeforeCompaction: { revisions: number; all: Buffer } = {
  revisions: 0,
  all: Buffer.alloc(0),
};

beforeAll(async () => {
  await history.start();
  mkName = suite.mk('burst');
  await client.create(masterKeysPath, masterKey(mkName));
  await suite.start();
  await suite.start();
  await eventually('MasterKey Ready', 60_000, async () =>
    readyOf(await client.get<DataKeyObject>(`${masterKeysPath}/${mkName}`))?.status === 'True'
      ? true
      : undefined,
  );
});

afterAll(() => history.stop());

/** Creates DataKeys, retrying each until the API server acknowledges it (a fault may be on). */
async function createBurst(prefix: string, count: number, concurrency = 6): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const name = `${prefix}-${next++}`;
      for (let attempt = 0; ; attempt++) {
        try {
          await client.create(
            dataKeysPath(suite.ns),
            dataKey(suite.ns, name, { masterKeyRef: { name: mkName } }),
          );
          break;
        } catch (err) {
          // A retry of a create that landed before the connection broke.
          if (err instanceof KubeApiError && err.status === 409 && attempt > 0) break;
          if (attempt > 600) throw err;
          await sleep(500);
        }
      }
      acknowledged.add(name);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Resolves once `n` more DataKeys were acknowledged: the fault starts mid-burst. */
async function afterAcknowledged(n: number): Promise<void> {
  const target = acknowledged.size + n;
  await eventually(`${target} DataKeys acknowledged`, 300_000, async () =>
    acknowledged.size >= target ? true : undefined,
  );
}

/** Seconds from now until every acknowledged DataKey exists and is Ready (polled each second). */
async function converge(check: (dk: KubeObject & Json) => boolean = () => true): Promise<number> {
  const started = Date.now();
  await eventually(
    'every acknowledged DataKey Ready',
    CONVERGE_TIMEOUT_MS,
    async () => {
      const items = await listDataKeys(suite.ns);
      const ready = items.filter((d) => readyOf(d)?.status === 'True' && check(d));
      return ready.length >= acknowledged.size ? true : undefined;
    },
    1000,
  );
  return Math.round((Date.now() - started) / 100) / 10;
}

/** Acknowledged DataKeys that do not exist, or whose Secret does not. */
async function lost(): Promise<string[]> {
  const names = new Set((await listDataKeys(suite.ns)).map((d) => d.metadata.name));
  const secrets = new Set(
    (await client.list(`/api/v1/namespaces/${suite.ns}/secrets`)).items.map((s) => s.metadata.name),
  );
  return [...acknowledged].filter((n) => !names.has(n) || !secrets.has(n));
}

function crashes(): number {
  return suite.operators.filter((o) => !o.alive() && !endedOnPurpose.has(o.pid)).length;
}

async function leaderAndFollower(): Promise<[OperatorProcess, OperatorProcess]> {
  return eventually('one leader among the live operators', 60_000, async () => {
    const live = suite.operators.filter((op) => op.alive());
    const roles = await Promise.all(live.map((op) => op.leader().catch(() => -1)));
    const leader = live[roles.indexOf(1)];
    const follower = live.find((_op, i) => roles[i] === 0);
    return leader && follower
      ? ([leader, follower] as [OperatorProcess, OperatorProcess])
      : undefined;
  });
}

/** Runs a burst with `fault` started a third of the way in; records the figures. */
async function faultDuringBurst(name: string, fault: () => Promise<void>): Promise<void> {
  const burst = createBurst(name, BURST);
  await afterAcknowledged(Math.ceil(BURST / 3));
  await fault();
  const convergeS = await converge();
  await burst;
  const missing = await lost();
  recordFigures({ fault: name, lost: missing.length, crashes: crashes(), converge_s: convergeS });
  expect(missing).toEqual([]);
  expect(crashes()).toBe(0);
}

test('API server killed (kill -9) mid-burst and restarted: watches cut, caches re-listed without an operator restart; nothing lost, all Ready', async () => {
  const pids = suite.operators.map((o) => o.pid);
  await faultDuringBurst('apiserver-kill9', () => killAndRestart('kube-apiserver'));
  expect(suite.operators.filter((o) => o.alive()).map((o) => o.pid)).toEqual(pids);
  expect(allOperatorLines.join('\n')).toContain('informer error, re-listing after backoff');
});

test(`API server frozen (SIGSTOP ${FREEZE_MS / 1000} s, then SIGCONT) mid-burst: nothing lost, all Ready`, async () => {
  await faultDuringBurst('apiserver-sigstop', () => freeze('kube-apiserver', FREEZE_MS));
});

test(`etcd frozen (SIGSTOP ${FREEZE_MS / 1000} s, then SIGCONT) mid-burst: nothing lost, all Ready`, async () => {
  await faultDuringBurst('etcd-sigstop', () => freeze('etcd', FREEZE_MS));
});

test('a partitioned leader (frozen past its lease): the follower takes over and finishes; the resumed one steps down', async () => {
  const [leader, follower] = await leaderAndFollower();
  await faultDuringBurst('partitioned-leader', async () => {
    process.kill(leader.pid, 'SIGSTOP');
    try {
      // The follower takes the lease once the frozen leader's record is a lease old.
      await eventually('the follower leads', LEASE_MS * 4, async () =>
        (await follower.leader()) === 1 ? true : undefined,
      );
    } finally {
      // Resumed with its stale view and the work it had in flight.
      process.kill(leader.pid, 'SIGCONT');
    }
  });
  // It learns it lost the lease (and says so) without a restart.
  await eventually('the resumed leader steps down', 60_000, async () =>
    (await leader.leader()) === 0 ? true : undefined,
  );
  const log = leader.lines.join('\n');
  expect(log).toContain('"msg":"stopped leading"');
  // Writes its workers still attempted from the stale view were refused unsent (the
  // Secret-history test below proves that none got through).
  recordFigures({
    fault: 'partitioned-leader-fenced-writes',
    fenced_writes: (log.match(/write not sent/g) ?? []).length,
  });
});

test('re-wrap of the whole burst after a rotation, with the API server killed mid-way', async () => {
  const before = (await client.get<KubeObject & Json>(`${masterKeysPath}/${mkName}`)).status as {
    primaryKeyVersion: string;
  };
  await client.mergePatch(`${masterKeysPath}/${mkName}`, {
    metadata: { annotations: { [ANNOTATION_ROTATE]: 'faults-1' } },
  });
  const primary = await eventually('a new primary version', 60_000, async () => {
    const mk = await client.get<KubeObject & Json>(`${masterKeysPath}/${mkName}`);
    const p = (mk.status as { primaryKeyVersion?: string }).primaryKeyVersion;
    return p && p !== before.primaryKeyVersion ? p : undefined;
  });
  const rewrapped = (dk: KubeObject & Json) =>
    (dk.status as { keyVersionId?: string }).keyVersionId === primary;
  await eventually('a fifth re-wrapped', 300_000, async () => {
    const items = await listDataKeys(suite.ns);
    return items.filter(rewrapped).length >= items.length / 5 ? true : undefined;
  });
  await killAndRestart('kube-apiserver');
  const convergeS = await converge(rewrapped);
  const missing = await lost();
  recordFigures({
    fault: 'rewrap-apiserver-kill9',
    lost: missing.length,
    crashes: crashes(),
    converge_s: convergeS,
  });
  expect(missing).toEqual([]);
});

/** The informers of the operator (the guard's watch of its namespace's Secrets included). */
function informerPaths(namespace: string): string[] {
  return [
    paths.masterKeysPath(),
    paths.dataKeysPath(),
    paths.secretsPath(),
    paths.secretsPath(namespace),
  ];
}

/** Log lines of `op` with `msg`, written after line `from`, for each informer path. */
function pathsLogged(op: OperatorProcess, from: number, msg: string): Set<string> {
  const logged = new Set<string>();
  for (const line of op.lines.slice(from)) {
    if (!line.includes(`"msg":"${msg}"`)) continue;
    const path = /"path":"([^"]+)"/.exec(line)?.[1];
    if (path) logged.add(path);
  }
  return logged;
}

/** Waits until every live operator logged `msg` for every informer since the marks. */
async function everyInformerLogged(marks: Map<OperatorProcess, number>, msg: string) {
  await eventually(`every informer of every operator: ${msg}`, 120_000, async () => {
    for (const [op, from] of marks) {
      const logged = pathsLogged(op, from, msg);
      if (!informerPaths(op.namespace).every((p) => logged.has(p))) return undefined;
    }
    return true;
  });
}

const WATCH_CACHE_OFF = '--watch-cache=false';

test('watches expired (410 Gone): etcd compacted past every watch resourceVersion; each informer re-lists, caches converge, no operator restarted', async () => {
  const live = suite.operators.filter((o) => o.alive());
  const pids = live.map((o) => o.pid);
  // Watches served by etcd itself, not the API server's watch cache: a watch's
  // resourceVersion is then etcd's revision, and compacting etcd expires it.
  let marks = new Map(live.map((op) => [op, op.lines.length]));
  await killAndRestart('kube-apiserver', { args: (old) => [...old, WATCH_CACHE_OFF] });
  await everyInformerLogged(marks, 'informer re-listed');

  marks = new Map(live.map((op) => [op, op.lines.length]));
  // The API server is held while etcd restarts (each of its etcd watches is cut)
  // and the history is compacted; resumed, it resumes each watch from the
  // revision after the last one it delivered: compacted, so every informer gets 410.
  const compactedAt = await whileFrozen('kube-apiserver', async () => {
    await killAndRestart('etcd');
    // The leak scan reads every revision: keep what the compaction removes (nothing
    // is written meanwhile, the API server being held).
    historyBeforeCompaction = await readEtcdHistory(localEtcdEndpoint());
    return compactEtcdHistory(localEtcdEndpoint());
  });
  await everyInformerLogged(marks, 'watch expired (410), re-listing');
  await everyInformerLogged(marks, 'informer re-listed');
  for (const [op, from] of marks) {
    // Each re-list read the state after the compaction.
    const relisted = op.lines
      .slice(from)
      .filter((l) => l.includes('"msg":"informer re-listed"'))
      .map((l) => Number(/"resourceVersion":"(\d+)"/.exec(l)?.[1]));
    expect(Math.min(...relisted)).toBeGreaterThanOrEqual(compactedAt);
  }

  // The caches converge: new DataKeys become Ready (the leader's caches), and
  // every replica's cache counts every DataKey of the cluster as Ready.
  await createBurst('after-410', Math.ceil(BURST / 3));
  const convergeS = await converge();
  await eventually('every replica caches every DataKey Ready', 60_000, async () => {
    const all = await client.list<DataKeyObject>(paths.dataKeysPath());
    const ready = all.items.filter((d) => readyOf(d)?.status === 'True').length;
    const cached = await Promise.all(
      live.map(async (op) =>
        Number(/^datakey_datakeys\{ready="True"\} (\S+)$/m.exec(await op.metrics())?.[1]),
      ),
    );
    return cached.every((n) => n === ready) ? true : undefined;
  });
  expect(live.map((o) => o.alive())).toEqual(live.map(() => true));
  expect(suite.operators.filter((o) => o.alive()).map((o) => o.pid)).toEqual(pids);
  const missing = await lost();
  recordFigures({
    fault: 'watch-expired-410',
    lost: missing.length,
    crashes: crashes(),
    converge_s: convergeS,
  });
  expect(missing).toEqual([]);

  // Back to the watch cache for the rest of the run (compaction stays off).
  await killAndRestart('kube-apiserver', {
    args: (old) => old.filter((a) => a !== WATCH_CACHE_OFF),
  });
});

test('every Secret history: exactly one data key per generation, none regenerated; no plaintext in any etcd revision, log or metric', async () => {
  const op = suite.operators.find((o) => o.alive()) as OperatorProcess;
  const verdict = await history.verify(
    (secret) => decryptSecret(op, secret),
    (key) => key.startsWith(`${suite.ns}/`),
  );
  expect(verdict.secrets).toBeGreaterThanOrEqual(acknowledged.size);
  // Re-wrapped copies are more than one per Secret: each opened to the same key.
  expect(verdict.copies).toBeGreaterThan(verdict.secrets);

  const needles = needlesOf(obtainedPlaintexts);
  const current = await readEtcdHistory(localEtcdEndpoint());
  const revisions = historyBeforeCompaction.revisions + current.revisions;
  const all = Buffer.concat([historyBeforeCompaction.all, current.all]);
  const leaks = [
    ...findNeedles(all, needles),
    ...findNeedles(Buffer.from(allOperatorLines.join('\n')), needles),
    ...(
      await Promise.all(suite.operators.filter((o) => o.alive()).map((o) => o.metrics()))
    ).flatMap((m) => findNeedles(Buffer.from(m), needles)),
  ];
  const events = await client.list(`/api/v1/namespaces/${suite.ns}/events`);
  leaks.push(...findNeedles(Buffer.from(JSON.stringify(events.items)), needles));
  recordFigures({
    fault: 'history',
    double_keys: verdict.doubleKeys.length,
    regenerated: verdict.regenerated.length,
    leaks: leaks.length,
  });
  expect(verdict.doubleKeys).toEqual([]);
  expect(verdict.regenerated).toEqual([]);
  // Positive control: the history holds this run's Secrets (and far more revisions than keys).
  expect(revisions).toBeGreaterThan(acknowledged.size * 2);
  expect(leaks).toEqual([]);
});

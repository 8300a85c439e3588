// Injection benchmark (figures, not a test): npm run bench:inject
//
// Starts (or reuses) the local cluster with its node, builds and imports the
// operator image, runs the operator in-process with pod injection on, then
// 1. sends BENCH_REVIEWS (default 1000) AdmissionReviews of an annotated pod to
//    the webhook over HTTPS, one at a time on a keep-alive connection, and
//    measures each round trip;
// 2. starts BENCH_PODS (default 5) pods without and with injection on the real
//    node, one after another, and measures create → app container running.
// Progress goes to stderr; the last line on stdout is one JSON object:
// {"admission_p50_ms","admission_p99_ms","pod_start_s","pod_start_injected_s"}
// (pod start figures are medians).
import { randomBytes } from 'node:crypto';
import * as https from 'node:https';
import { createLogger } from '../../src/common/logger';
import { dataKeysPath, masterKeysPath } from '../../src/api/paths';
import { API_VERSION } from '../../src/api/types';
import { eventually, freePort } from '../../src/common/wait';
import { up } from '../devcluster/cluster';
import { BUSYBOX_IMAGE } from '../devcluster/images';
import { buildAndImport, OPERATOR_IMAGE } from '../devcluster/image';
import { nodePaths, BRIDGE_IP } from '../devcluster/node';
import { injectionOptions } from '../../src/injection/options';
import { WEBHOOK_PATH } from '../../src/injection/endpoints';
import { startOperator } from '../../src/operator/operator';
import { KubeClient, type KubeObject } from '../../src/runtime/kube-client';

const REVIEWS = intEnv('BENCH_REVIEWS', 1000);
const PODS = intEnv('BENCH_PODS', 5);

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d{1,6}$/.test(raw) || Number(raw) < 1)
    throw new Error(`${name} must be a positive integer`);
  return Number(raw);
}

const log = (msg: string) => process.stderr.write(`[bench:inject] ${msg}\n`);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );

function pod(name: string, namespace: string, node: string, injected: boolean) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace,
      ...(injected ? { annotations: { 'kms.datakey.io/inject': 'bench' } } : {}),
    },
    spec: {
      nodeName: node,
      restartPolicy: 'Never',
      serviceAccountName: 'bench',
      securityContext: { runAsNonRoot: true, runAsUser: 1000 },
      containers: [
        { name: 'app', image: BUSYBOX_IMAGE, imagePullPolicy: 'Never', command: ['sleep', '3600'] },
      ],
    },
  };
}

async function admissionLatencies(url: string, ca: string, namespace: string): Promise<number[]> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const body = (i: number) =>
    JSON.stringify({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid: `bench-${i}`,
        operation: 'CREATE',
        namespace,
        object: pod(`p${i}`, namespace, 'n', true),
      },
    });
  const once = (i: number) =>
    new Promise<number>((resolve, reject) => {
      const payload = body(i);
      const start = process.hrtime.bigint();
      const req = https.request(
        `${url}${WEBHOOK_PATH}`,
        { method: 'POST', agent, headers: { 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode !== 200) reject(new Error(`webhook answered ${res.statusCode}`));
            else resolve(Number(process.hrtime.bigint() - start) / 1e6);
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  for (let i = 0; i < 50; i++) await once(i); // warm-up: TLS session, JIT
  const out: number[] = [];
  for (let i = 0; i < REVIEWS; i++) out.push(await once(i));
  agent.destroy();
  return out;
}

async function podStart(
  client: KubeClient,
  ns: string,
  node: string,
  name: string,
  injected: boolean,
) {
  const start = Date.now();
  await client.create(`/api/v1/namespaces/${ns}/pods`, pod(name, ns, node, injected));
  await eventually(
    `pod ${name} running`,
    120_000,
    async () => {
      const p = await client.get<
        KubeObject & { status?: { containerStatuses?: { state?: { running?: unknown } }[] } }
      >(`/api/v1/namespaces/${ns}/pods/${name}`);
      return p.status?.containerStatuses?.[0]?.state?.running ? true : undefined;
    },
    50,
  );
  const seconds = (Date.now() - start) / 1000;
  await client.delete(`/api/v1/namespaces/${ns}/pods/${name}`, { gracePeriodSeconds: 0 });
  return seconds;
}

async function main(): Promise<void> {
  const cluster = await up();
  if (!cluster.node)
    throw new Error(`bench:inject needs the local node: ${cluster.noNodeReason ?? 'none'}`);
  await buildAndImport({ address: nodePaths(cluster.stateDir).containerdSock }, { log });
  const client = KubeClient.fromEnvironment(cluster.kubeconfig);
  const id = randomBytes(3).toString('hex');
  const ns = `bench-inject-${id}`;
  const port = await freePort();
  const injection = injectionOptions(
    {
      'webhook-configuration': `bench-inject-${id}`,
      'delivery-url': `https://${BRIDGE_IP}:${port}`,
      'agent-image': OPERATOR_IMAGE,
    },
    { host: '0.0.0.0', port },
    `bench-inject-${id}-op`,
  );
  const operator = await startOperator({
    kubeconfig: cluster.kubeconfig,
    namespace: `bench-inject-${id}-op`,
    metricsHost: '127.0.0.1',
    metricsPort: 0,
    injection,
    logger: createLogger('operator', { level: 'warn' }),
  });
  try {
    await setUp(client, ns, id);
    const tls = await client.get<KubeObject & { data: Record<string, string> }>(
      `/api/v1/namespaces/bench-inject-${id}-op/secrets/datakey-operator-webhook-tls`,
    );
    const ca = Buffer.from(tls.data['ca.crt'], 'base64').toString();
    log(`${REVIEWS} AdmissionReviews`);
    const latencies = (await admissionLatencies(`https://127.0.0.1:${port}`, ca, ns)).sort(
      (a, b) => a - b,
    );
    const plain: number[] = [];
    const injected: number[] = [];
    for (let i = 0; i < PODS; i++) {
      plain.push(await podStart(client, ns, cluster.node, `plain-${i}`, false));
      injected.push(await podStart(client, ns, cluster.node, `injected-${i}`, true));
      log(`pod start ${i + 1}/${PODS}: plain ${plain[i]} s, injected ${injected[i]} s`);
    }
    process.stdout.write(
      JSON.stringify({
        admission_p50_ms: Number(percentile(latencies, 50).toFixed(2)),
        admission_p99_ms: Number(percentile(latencies, 99).toFixed(2)),
        pod_start_s: median(plain),
        pod_start_injected_s: median(injected),
      }) + '\n',
    );
  } finally {
    await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
    await tearDownKeys(client, id);
    await operator.stop(); // also removes its webhook registration
    await client.delete(`/api/v1/namespaces/bench-inject-${id}-op`).catch(() => undefined);
  }
}

async function setUp(client: KubeClient, ns: string, id: string): Promise<void> {
  await client.create('/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: ns },
  });
  await client.create(masterKeysPath(), {
    apiVersion: API_VERSION,
    kind: 'MasterKey',
    metadata: { name: `bench-inject-${id}` },
    spec: {},
  });
  await client.create(dataKeysPath(ns), {
    apiVersion: API_VERSION,
    kind: 'DataKey',
    metadata: { name: 'bench', namespace: ns },
    spec: { masterKeyRef: { name: `bench-inject-${id}` } },
  });
  await client.create(`/api/v1/namespaces/${ns}/serviceaccounts`, {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: 'bench', namespace: ns },
  });
  await client.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: 'decrypt', namespace: ns },
    rules: [{ apiGroups: ['kms.datakey.io'], resources: ['datakeys'], verbs: ['decrypt'] }],
  });
  await client.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: 'decrypt', namespace: ns },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'decrypt' },
    subjects: [{ kind: 'ServiceAccount', name: 'bench', namespace: ns }],
  });
  await eventually('the bench DataKey Ready', 60_000, async () => {
    const dk = await client.get<
      KubeObject & { status?: { conditions?: { type: string; status: string }[] } }
    >(dataKeysPath(ns, 'bench'));
    return dk.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
      ? true
      : undefined;
  });
}

/** The MasterKey's finalizer waits for its DataKeys (gone with the namespace); the operator still runs. */
async function tearDownKeys(client: KubeClient, id: string): Promise<void> {
  await client.delete(masterKeysPath(`bench-inject-${id}`)).catch(() => undefined);
  await eventually('the bench MasterKey gone', 60_000, async () => {
    try {
      await client.get(masterKeysPath(`bench-inject-${id}`));
      return undefined;
    } catch {
      return true;
    }
  }).catch(() => log('the bench MasterKey is still there (finalizer)'));
}

main().catch((err: Error) => {
  process.stderr.write(`bench:inject failed: ${err.message}\n`);
  process.exit(1);
});

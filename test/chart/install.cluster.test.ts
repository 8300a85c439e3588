// The in-cluster path, end to end on the real node: `helm install` of the chart
// with the image built from the Dockerfile, the operator as two pods with only
// the chart's RBAC, the examples Ready through it, an injected example pod
// reading its key through the webhook and delivery Services (kube-proxy,
// CoreDNS), `helm upgrade` rolling the pods, `helm uninstall` leaving the CRDs.
import * as tls from 'node:tls';
import { buildAndImport } from '../../harness/devcluster/image';
import { nodePaths } from '../../harness/devcluster/node';
import { defaultStateDir } from '../../harness/devcluster/paths';
import {
  CHART,
  RELEASE,
  RELEASE_NS,
  helmAsync,
  helmBinaries,
  HELM_BUILD_TIMEOUT_MS,
} from '../helpers/helm';
import {
  client,
  getOrUndefined,
  kubectl,
  kubectlOk,
  useOperatorSuite,
  type Json,
} from '../helpers/operator-suite';
import { applyExamplesReady, removeExamples, runExampleWorkload } from '../helpers/examples';
import { onLocalNodeWithImage } from '../helpers/image-on-node';
import { eventually, sleep } from '../helpers/wait';
import type { KubeObject } from '../../src/runtime/kube-client';

type Pod = KubeObject & {
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
  };
};
type Lease = KubeObject & { spec?: { holderIdentity?: string } };

const LABELS = `app.kubernetes.io/instance=${RELEASE}`;
const LEASE = `/apis/coordination.k8s.io/v1/namespaces/${RELEASE_NS}/leases/datakey-operator`;

onLocalNodeWithImage('helm install on the local node', installSuite);

async function operatorPods(): Promise<Pod[]> {
  const list = await client.list<Pod>(`/api/v1/namespaces/${RELEASE_NS}/pods`, {
    labelSelector: 'app.kubernetes.io/name=datakey-operator',
  });
  return list.items.filter((p) => !p.metadata.deletionTimestamp);
}

const ready = (p: Pod) =>
  p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/** The certificate a replica serves on its pod IP (the host reaches pod IPs over the bridge). */
function servedFingerprint(ip: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: ip, port: 9443, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '');
      socket.end();
    });
    socket.on('error', reject);
  });
}

function annotatedPod(name: string): Json {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'shop', annotations: { 'kms.datakey.io/inject': 'orders' } },
    spec: {
      serviceAccountName: 'orders-reader',
      restartPolicy: 'Never',
      securityContext: { runAsNonRoot: true, runAsUser: 1000 },
      containers: [{ name: 'app', image: 'busybox:1.36', command: ['true'] }],
    },
  };
}

function installSuite(): void {
  // The lock keeps host operators of other suites from reconciling the same objects.
  useOperatorSuite('chart-install');
  const helmArgs = ['-n', RELEASE_NS, '--set', 'image.tag=dev', '--wait', '--timeout', '5m'];

  beforeAll(async () => {
    await helmBinaries();
    await buildAndImport({ address: nodePaths(defaultStateDir()).containerdSock });
  }, HELM_BUILD_TIMEOUT_MS);

  test('helm install: two operator pods Running and Ready with the image built here', async () => {
    const started = Date.now();
    const r = await helmAsync('helm', [
      'install',
      RELEASE,
      CHART,
      '--create-namespace',
      ...helmArgs,
    ]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout).toContain('kubectl apply -f');
    const pods = await operatorPods();
    expect(pods).toHaveLength(2);
    for (const p of pods) expect(ready(p)).toBe(true);
    await applyExamplesReady();
    process.stderr.write(
      `[chart] helm install → examples' DataKeys Ready: ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
    );
  });

  test('both replicas serve the webhook with the same certificate, renewed by none of them', async () => {
    const ips = (await operatorPods()).map((p) => p.status?.podIP as string);
    const prints = await Promise.all(ips.map(servedFingerprint));
    expect(prints[0]).toMatch(/^[0-9A-F:]+$/);
    expect(new Set(prints).size).toBe(1);
    const mwc = await client.get<
      KubeObject & { webhooks: { clientConfig: { caBundle?: string } }[] }
    >(`/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${RELEASE}`);
    expect(mwc.webhooks[0].clientConfig.caBundle).toBeTruthy();
  });

  test('the example workload gets its key through the Services (webhook, delivery by DNS name)', async () => {
    const { agent, app } = await runExampleWorkload();
    expect(agent).toContain('wrote 1 key(s) (orders) to /var/run/datakey');
    expect(app).toContain('key /var/run/datakey/orders: 32 bytes, mode 400, uid 1000');
    expect(app).toMatch(/ \/var\/run\/datakey tmpfs ro[,\s]/);
    const pod = (
      await client.list<Pod & { spec: Json }>('/api/v1/namespaces/shop/pods', {
        labelSelector: 'app=orders-reader',
      })
    ).items[0];
    const args = ((pod.spec.initContainers as Json[])[0].args as string[]).join(' ');
    expect(args).toContain(`--url https://datakey-operator-webhook.${RELEASE_NS}.svc`);
  });

  test('deleting one replica does not fail admissions', async () => {
    const [victim] = await operatorPods();
    const deleting = kubectl([
      'delete',
      'pod',
      '-n',
      RELEASE_NS,
      victim.metadata.name,
      '--wait=true',
    ]);
    const failures: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await kubectl(
        ['create', '-f', '-', '-o', 'name'],
        JSON.stringify(annotatedPod(`admit-${i}`)),
      );
      if (r.code !== 0) failures.push(r.stderr);
      await sleep(250);
    }
    await deleting;
    expect(failures).toEqual([]);
    await kubectl(['delete', 'pods', '-n', 'shop', '-l', '!app', '--wait=false']);
    await eventually('two operator pods Ready again', 120_000, async () => {
      const pods = await operatorPods();
      return pods.length === 2 && pods.every(ready) ? pods : undefined;
    });
  });

  test('helm upgrade with a changed value rolls the pods; a new leader takes over and reconciles', async () => {
    const before = new Set((await operatorPods()).map((p) => p.metadata.name));
    // Samples of whether the lease names a live replica: the leaderless time is a figure.
    const samples: { at: number; led: boolean }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const [lease, pods] = await Promise.all([getOrUndefined<Lease>(LEASE), operatorPods()]);
        const holder = lease?.spec?.holderIdentity ?? '';
        const led = pods.some((p) => ready(p) && holder.startsWith(`${p.metadata.name}-`));
        samples.push({ at: Date.now(), led });
        await sleep(250);
      }
    })();
    const r = await helmAsync('helm', [
      'upgrade',
      RELEASE,
      CHART,
      ...helmArgs,
      '--set',
      'podAnnotations.datakey\\.io/rollout=two',
    ]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const after = await eventually('the rollout replaced both pods', 120_000, async () => {
      const pods = await operatorPods();
      return pods.length === 2 && pods.every((p) => !before.has(p.metadata.name) && ready(p))
        ? pods
        : undefined;
    });
    const names = new Set(after.map((p) => p.metadata.name));
    await eventually('a new pod leads', 60_000, async () => {
      const lease = await getOrUndefined<Lease>(LEASE);
      return [...names].some((n) => lease?.spec?.holderIdentity?.startsWith(n)) ? lease : undefined;
    });
    sampling = false;
    await sampler;
    let longest = 0;
    for (let i = 1, since = -1; i < samples.length; i++) {
      if (!samples[i].led && since < 0) since = samples[i - 1].at;
      if (samples[i].led && since >= 0) {
        longest = Math.max(longest, samples[i].at - since);
        since = -1;
      }
    }
    process.stderr.write(
      `[chart] helm upgrade: longest time without a live leader ${longest / 1000} s\n`,
    );
    await kubectlOk(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'kms.datakey.io/v1alpha1',
        kind: 'DataKey',
        metadata: { name: 'after-upgrade', namespace: 'shop' },
        spec: { masterKeyRef: { name: 'payments' } },
      }),
    );
    await kubectlOk([
      'wait',
      '--for=condition=Ready',
      'datakey/after-upgrade',
      '-n',
      'shop',
      '--timeout=60s',
    ]);
  });

  test('operator pod memory', async () => {
    for (const p of await operatorPods()) {
      const r = await kubectlOk([
        'get',
        '--raw',
        `/api/v1/namespaces/${RELEASE_NS}/pods/${p.metadata.name}:8080/proxy/metrics`,
      ]);
      const rss = /^datakey_process_process_resident_memory_bytes ([0-9.e+]+)$/m.exec(r)?.[1];
      expect(Number(rss)).toBeGreaterThan(10e6);
      process.stderr.write(`[chart] ${p.metadata.name} RSS ${(Number(rss) / 1e6).toFixed(0)} MB\n`);
    }
  });

  test('helm uninstall removes everything of the release but the CRDs', async () => {
    await removeExamples();
    const r = await helmAsync('helm', [
      'uninstall',
      RELEASE,
      '-n',
      RELEASE_NS,
      '--wait',
      '--timeout',
      '2m',
    ]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    for (const kind of [
      'deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets',
      'clusterroles,clusterrolebindings,mutatingwebhookconfigurations',
    ]) {
      const left = await kubectlOk(['get', kind, '-A', '-l', LABELS, '-o', 'name']);
      expect(left.trim()).toBe('');
    }
    expect(
      await getOrUndefined(
        `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${RELEASE}`,
      ),
    ).toBeUndefined();
    const crds = await kubectlOk(['get', 'crd', '-o', 'name']);
    expect(crds).toContain('masterkeys.kms.datakey.io');
    expect(crds).toContain('datakeys.kms.datakey.io');
    await kubectl(['delete', 'namespace', RELEASE_NS, '--wait=false']);
  });
}

// Pod injection on the real node: the webhook served by a host operator (url
// registration, delivery on the bridge gateway), real pods running the agent
// from the image built from the Dockerfile, TokenReview and SubjectAccessReview
// by the real API server.
import { createHash } from 'node:crypto';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { buildAndImport, OPERATOR_IMAGE } from '../../harness/devcluster/image';
import { BUSYBOX_IMAGE } from '../../harness/devcluster/images';
import { BRIDGE_IP, nodePaths } from '../../harness/devcluster/node';
import { defaultStateDir } from '../../harness/devcluster/paths';
import { freePort } from '../../src/common/wait';
import { AGENT_AUDIENCE } from '../../src/injection/pod-patch';
import { DELIVER_PATH } from '../../src/injection/endpoints';
import {
  applyObjects,
  client,
  dataKey,
  decode,
  decryptGenerations,
  decryptSecret,
  eventsFor,
  getOrUndefined,
  kubectl,
  kubectlOk,
  leakScanTests,
  masterKey,
  obtainedPlaintexts,
  secretsPath,
  useOperatorSuite,
  waitAllReady,
  type Json,
  type SecretObject,
} from '../helpers/operator-suite';
import type { OperatorProcess } from '../helpers/operator-process';
import { findNeedles, needlesOf } from '../helpers/leak-scan';
import { NODE_NAME, onLocalNodeWithImage } from '../helpers/image-on-node';
import { eventually, sleep } from '../helpers/wait';
import type { KubeObject } from '../../src/runtime/kube-client';

const nodeName = NODE_NAME;

type Pod = KubeObject & {
  spec?: Json;
  status?: {
    phase?: string;
    initContainerStatuses?: { state?: { terminated?: { exitCode?: number } } }[];
  };
};

// The operator runs on this host, beside the local node: the local cluster only.
onLocalNodeWithImage('pod injection on the local node', injectionSuite);

function injectionSuite(): void {
  const suite = useOperatorSuite('inject');
  const ns = suite.ns;
  const mwc = `${suite.id}-inject`;
  let op: OperatorProcess;
  let port = 0;
  let caBundle = '';
  let controlSecret: SecretObject | undefined;
  const agentLogs: string[] = [];

  const podsPath = `/api/v1/namespaces/${ns}/pods`;
  const podPath = (name: string) => `${podsPath}/${name}`;

  async function startInjectingOperator(extra: string[] = []): Promise<OperatorProcess> {
    return suite.start({
      args: [
        '--webhook-listen',
        `0.0.0.0:${port}`,
        '--webhook-url',
        `https://127.0.0.1:${port}`,
        '--delivery-url',
        `https://${BRIDGE_IP}:${port}`,
        '--webhook-configuration',
        mwc,
        '--agent-image',
        OPERATOR_IMAGE,
        ...extra,
      ],
    });
  }

  /** A pod that prints facts about its key file (a hash, never the key) and exits. */
  function keyReader(
    name: string,
    opts: { sa?: string; keys?: string; hold?: number; annotations?: Record<string, string> } = {},
  ): Json {
    const file = '/var/run/datakey/orders';
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: ns,
        annotations: { 'kms.datakey.io/inject': opts.keys ?? 'orders', ...opts.annotations },
      },
      spec: {
        nodeName,
        restartPolicy: 'Never',
        serviceAccountName: opts.sa ?? 'app',
        securityContext: {
          runAsNonRoot: true,
          runAsUser: 1000,
          runAsGroup: 1000,
          seccompProfile: { type: 'RuntimeDefault' },
        },
        containers: [
          {
            name: 'app',
            image: BUSYBOX_IMAGE,
            imagePullPolicy: 'Never',
            command: [
              'sh',
              '-c',
              `stat -c 'mode=%a uid=%u' ${file}; grep ' /var/run/datakey ' /proc/mounts; ` +
                `sha256sum ${file}; ls /var/run/datakey; echo done; sleep ${opts.hold ?? 0}`,
            ],
            securityContext: {
              allowPrivilegeEscalation: false,
              capabilities: { drop: ['ALL'] },
            },
          },
        ],
      },
    };
  }

  async function podFinished(name: string): Promise<Pod> {
    return eventually(`pod ${name} finished`, 120_000, async () => {
      const p = await client.get<Pod>(podPath(name));
      return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed' ? p : undefined;
    });
  }

  async function logsOf(name: string, container: string): Promise<string> {
    const out = await kubectlOk(['logs', '-n', ns, name, '-c', container]);
    if (container === 'datakey-agent') agentLogs.push(out);
    return out;
  }

  async function secretOf(name: string): Promise<SecretObject> {
    return client.get<SecretObject>(`${secretsPath(ns)}/${name}`);
  }

  const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  async function decryptedHash(name: string): Promise<string> {
    return sha256(await decryptSecret(op, await secretOf(name)));
  }

  async function admissions(): Promise<number> {
    const text = await op.metrics();
    return [...text.matchAll(/^datakey_webhook_admissions_total\{[^}]*\} (\d+)/gm)].reduce(
      (sum, m) => sum + Number(m[1]),
      0,
    );
  }

  beforeAll(async () => {
    const img = await buildAndImport({ address: nodePaths(defaultStateDir()).containerdSock });
    process.stderr.write(`[inject] image ${img.built ? 'built' : 'reused'}\n`);
    port = await freePort();
    op = await startInjectingOperator();
    await applyObjects([
      masterKey(suite.mk('inject')),
      dataKey(ns, 'orders', { masterKeyRef: { name: suite.mk('inject') } }),
      dataKey(ns, 'payments', { masterKeyRef: { name: suite.mk('inject') } }),
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'app', namespace: ns } },
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'nobody', namespace: ns } },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: 'decrypt-orders', namespace: ns },
        rules: [
          {
            apiGroups: ['kms.datakey.io'],
            resources: ['datakeys'],
            resourceNames: ['orders', 'later'],
            verbs: ['decrypt'],
          },
        ],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: 'app-decrypts-orders', namespace: ns },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'decrypt-orders' },
        subjects: [{ kind: 'ServiceAccount', name: 'app', namespace: ns }],
      },
    ]);
    await waitAllReady(ns, 2, 60_000);
    const tlsSecret = await client.get<SecretObject>(
      `${secretsPath(suite.operatorNs)}/datakey-operator-webhook-tls`,
    );
    caBundle = Buffer.from(tlsSecret.data?.['ca.crt'] ?? '', 'base64').toString();
    // The API server's service-account controller creates the default accounts' tokens lazily.
    await eventually('service account app', 30_000, () =>
      getOrUndefined(`/api/v1/namespaces/${ns}/serviceaccounts/app`),
    );
  }, 900_000);

  afterAll(async () => {
    await kubectl(['delete', 'mutatingwebhookconfiguration', mwc, '--ignore-not-found']);
  });

  test('the operator registered the webhook: loopback url, CA bundle, only annotated pods', async () => {
    const config = await client.get<KubeObject & { webhooks: Json[] }>(
      `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${mwc}`,
    );
    const [webhook] = config.webhooks as {
      clientConfig: { url: string; caBundle: string };
      matchConditions: { expression: string }[];
      failurePolicy: string;
      namespaceSelector: Json;
    }[];
    expect(webhook.clientConfig.url).toBe(`https://127.0.0.1:${port}/mutate-pods`);
    expect(Buffer.from(webhook.clientConfig.caBundle, 'base64').toString()).toBe(caBundle);
    expect(webhook.matchConditions[0].expression).toContain("'kms.datakey.io/inject' in");
    expect(webhook.failurePolicy).toBe('Fail');
    expect(JSON.stringify(webhook.namespaceSelector)).toContain(suite.operatorNs);
  });

  test('an annotated pod reads its key from a read-only tmpfs: mode 0400, its uid, the Decrypt bytes', async () => {
    await applyObjects([keyReader('reader')]);
    const pod = await podFinished('reader');
    const out = await logsOf('reader', 'app');
    expect(pod.status?.phase).toBe('Succeeded');
    expect(out).toContain('mode=400 uid=1000');
    expect(out).toMatch(/ \/var\/run\/datakey tmpfs ro[,\s]/);
    const hash = /^([0-9a-f]{64}) {2}\/var\/run\/datakey\/orders$/m.exec(out)?.[1];
    expect(hash).toBe(await decryptedHash('orders'));
    expect(out).toMatch(/^orders\norders.generation\norders.generations\ndone$/m);
    expect(await logsOf('reader', 'datakey-agent')).toContain(
      'wrote 1 key(s) (orders) to /var/run/datakey',
    );
    expect((await eventsFor(ns, 'reader', 'DataKeyDelivered')).length).toBeGreaterThan(0);
  });

  test('after the master key rotates, a running pod keeps its bytes and a new pod gets the same key', async () => {
    const before = await decryptedHash('orders');
    await applyObjects([keyReader('holder', { hold: 600 })]);
    await eventually('holder running', 60_000, async () => {
      const p = await client.get<Pod>(podPath('holder'));
      return p.status?.phase === 'Running' ? p : undefined;
    });
    await kubectlOk([
      'annotate',
      'masterkey',
      suite.mk('inject'),
      'kms.datakey.io/rotate=r1',
      '--overwrite',
    ]);
    await eventually('orders re-wrapped to the Advance flow', 60_000, async () => {
      const s = await secretOf('orders');
      return Buffer.from(s.data?.flow ?? '', 'base64').toString() === 'Advance' ? s : undefined;
    });
    expect(await decryptedHash('orders')).toBe(before);
    await applyObjects([keyReader('after-rotation')]);
    await podFinished('after-rotation');
    expect(await logsOf('after-rotation', 'app')).toContain(before);
    const now = await kubectlOk([
      'exec',
      '-n',
      ns,
      'holder',
      '-c',
      'app',
      '--',
      'sha256sum',
      '/var/run/datakey/orders',
    ]);
    expect(now).toContain(before);
    await kubectlOk(['delete', 'pod', '-n', ns, 'holder', '--grace-period=0', '--wait=false']);
  });

  /** Regenerates `orders` and waits until its Secret holds the next generation. */
  async function regenerateOrders(token: string): Promise<SecretObject> {
    const before = Number(decode((await secretOf('orders')).data?.generation));
    await kubectlOk([
      'annotate',
      'datakey',
      '-n',
      ns,
      'orders',
      `kms.datakey.io/regenerate=${token}`,
      '--overwrite',
    ]);
    return eventually(`orders at generation ${before + 1}`, 30_000, async () => {
      const s = await secretOf('orders');
      return decode(s.data?.generation) === String(before + 1) ? s : undefined;
    });
  }

  /** sha256 of every kept generation, by number, through Decrypt. */
  async function generationHashes(secret: SecretObject): Promise<Map<number, string>> {
    const opened = await decryptGenerations(op, secret);
    return new Map([...opened].map(([n, b]) => [n, sha256(b)]));
  }

  const filesScript =
    'cd /var/run/datakey && echo "current=$(cat orders.generation)" && ' +
    'ls orders.generations | tr "\\n" " " && echo && ' +
    'sha256sum orders orders.generations/*';

  test('an injected pod sees <name>, <name>.generation and every <name>.generations/<n>', async () => {
    const secret = await regenerateOrders('inject-g1');
    const hashes = await generationHashes(secret);
    const current = Number(decode(secret.data?.generation));
    expect([...hashes.keys()]).toEqual([current - 1, current]);
    const reader = keyReader('generations-reader');
    ((reader.spec as Json).containers as Json[])[0].command = ['sh', '-c', filesScript];
    await applyObjects([reader]);
    expect((await podFinished('generations-reader')).status?.phase).toBe('Succeeded');
    const out = await logsOf('generations-reader', 'app');
    expect(out).toContain(`current=${current}\n${current - 1} ${current} \n`);
    expect(out).toContain(`${hashes.get(current)}  orders\n`);
    for (const [n, hash] of hashes) expect(out).toContain(`${hash}  orders.generations/${n}`);
  });

  test('a sidecar-mode pod sees a new generation appear in its files without a restart', async () => {
    await applyObjects([
      keyReader('refreshing', {
        hold: 600,
        annotations: {
          'kms.datakey.io/inject-mode': 'sidecar',
          'kms.datakey.io/refresh-interval': '2s',
        },
      }),
    ]);
    await eventually('refreshing running', 60_000, async () => {
      const p = await client.get<Pod>(podPath('refreshing'));
      return p.status?.phase === 'Running' ? p : undefined;
    });
    const exec = () =>
      kubectlOk(['exec', '-n', ns, 'refreshing', '-c', 'app', '--', 'sh', '-c', filesScript]);
    // The app started after the sidecar wrote the keys (its startup probe).
    const first = await exec();
    const before = Number(decode((await secretOf('orders')).data?.generation));
    expect(first).toContain(`current=${before}`);

    const secret = await regenerateOrders('sidecar-g1');
    const hashes = await generationHashes(secret);
    // Waits for the file itself: no wall-clock bound is asserted.
    const seen = await eventually('the new generation in the pod', 180_000, async () => {
      const out = await exec();
      return out.includes(`current=${before + 1}`) ? out : undefined;
    });
    expect(seen).toContain(`${before} ${before + 1} \n`); // generation before - 1 dropped
    expect(seen).toContain(`${hashes.get(before + 1)}  orders\n`);
    for (const [n, hash] of hashes) expect(seen).toContain(`${hash}  orders.generations/${n}`);
    const pod = await client.get<Pod & { status?: { initContainerStatuses?: Json[] } }>(
      podPath('refreshing'),
    );
    expect(pod.status?.initContainerStatuses?.[0]).toMatchObject({ restartCount: 0 });
    expect(await logsOf('refreshing', 'datakey-agent')).toContain('refreshed the keys');
    await kubectlOk(['delete', 'pod', '-n', ns, 'refreshing', '--grace-period=0', '--wait=false']);
  });

  /** A Deployment of one pod that asks for `orders`, rolled on regeneration when `restarts`. */
  function deployment(name: string, restarts: boolean): Json {
    const pod = keyReader('unused', {
      hold: 3600,
      annotations: restarts ? { 'kms.datakey.io/restart-on-regenerate': 'true' } : {},
    });
    return {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name, namespace: ns },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: name } },
        template: {
          metadata: { labels: { app: name }, annotations: (pod.metadata as Json).annotations },
          spec: {
            ...(pod.spec as Json),
            restartPolicy: 'Always',
            terminationGracePeriodSeconds: 0,
          },
        },
      },
    };
  }

  type Deployment = KubeObject & {
    spec: { template: { metadata: { annotations?: Record<string, string> } } };
    status?: {
      observedGeneration?: number;
      updatedReplicas?: number;
      readyReplicas?: number;
      replicas?: number;
    };
  };
  const deploymentPath = (name: string) => `/apis/apps/v1/namespaces/${ns}/deployments/${name}`;
  const rolledOut = (name: string) =>
    eventually(`deployment ${name} rolled out`, 180_000, async () => {
      const d = await client.get<Deployment>(deploymentPath(name));
      const s = d.status ?? {};
      return s.observedGeneration === d.metadata.generation &&
        s.updatedReplicas === 1 &&
        s.readyReplicas === 1 &&
        s.replicas === 1
        ? d
        : undefined;
    });

  test('a workload with restart-on-regenerate is rolled once per regeneration and its new pod holds the new key; one without is untouched', async () => {
    await applyObjects([deployment('rolling', true), deployment('plain', false)]);
    const rollingBefore = await rolledOut('rolling');
    const plainBefore = await rolledOut('plain');

    const secret = await regenerateOrders('rollout-g1');
    const generation = Number(decode(secret.data?.generation));
    const rolled = await eventually('rolling restarted', 60_000, async () => {
      const d = await client.get<Deployment>(deploymentPath('rolling'));
      return d.spec.template.metadata.annotations?.['kms.datakey.io/restartedAt'] ? d : undefined;
    });
    expect(rolled.metadata.annotations?.['kms.datakey.io/restarted-for']).toBe(
      JSON.stringify({ orders: generation }),
    );
    expect(rolled.metadata.generation).toBe((rollingBefore.metadata.generation as number) + 1);
    await rolledOut('rolling');
    const hash = await decryptedHash('orders');
    const pod = await eventually('the new rolling pod alone', 120_000, async () => {
      const pods = await client.list<Pod>(podsPath, { labelSelector: 'app=rolling' });
      const live = pods.items.filter((p) => !p.metadata.deletionTimestamp);
      return live.length === 1 && live[0].status?.phase === 'Running' ? live[0] : undefined;
    });
    const out = await kubectlOk([
      'exec',
      '-n',
      ns,
      pod.metadata.name,
      '-c',
      'app',
      '--',
      'sha256sum',
      '/var/run/datakey/orders',
    ]);
    expect(out).toContain(hash);

    // Exactly once: later Secret events (e.g. a restore) do not roll it again.
    await client.delete(`${secretsPath(ns)}/orders`);
    await eventually('orders Secret back', 30_000, () =>
      getOrUndefined(`${secretsPath(ns)}/orders`),
    );
    await new Promise((r) => setTimeout(r, 3000));
    const after = await client.get<Deployment>(deploymentPath('rolling'));
    expect(after.metadata.generation).toBe(rolled.metadata.generation);
    const events = await eventsFor(ns, 'rolling', 'RestartedForDataKey');
    expect(events.reduce((n, e) => n + ((e.count as number | undefined) ?? 1), 0)).toBe(1);

    const plain = await client.get<Deployment>(deploymentPath('plain'));
    expect(plain.metadata.generation).toBe(plainBefore.metadata.generation);
    expect(
      plain.spec.template.metadata.annotations?.['kms.datakey.io/restartedAt'],
    ).toBeUndefined();
    await kubectlOk(['delete', 'deployment', '-n', ns, 'rolling', 'plain', '--wait=false']);
  });

  test('a sidecar-mode Job completes once its main container exits', async () => {
    const template = keyReader('unused', {
      annotations: { 'kms.datakey.io/inject-mode': 'sidecar' },
    });
    await applyObjects([
      {
        apiVersion: 'batch/v1',
        kind: 'Job',
        metadata: { name: 'sidecar-job', namespace: ns },
        spec: {
          backoffLimit: 0,
          template: {
            metadata: { annotations: (template.metadata as Json).annotations },
            spec: template.spec,
          },
        },
      },
    ]);
    const job = await eventually('sidecar-job finished', 180_000, async () => {
      const j = await client.get<KubeObject & { status?: { succeeded?: number; failed?: number } }>(
        `/apis/batch/v1/namespaces/${ns}/jobs/sidecar-job`,
      );
      return j.status?.succeeded || j.status?.failed ? j : undefined;
    });
    expect(job.status?.succeeded).toBe(1);
    const pods = await client.list<Pod>(podsPath, { labelSelector: 'job-name=sidecar-job' });
    const out = await logsOf(pods.items[0].metadata.name, 'app');
    expect(out).toContain(`${await decryptedHash('orders')}  /var/run/datakey/orders`);
  });

  test('a service account without decrypt gets nothing: the agent fails, the app never runs, an Event says why', async () => {
    await applyObjects([keyReader('denied', { sa: 'nobody' })]);
    const pod = await podFinished('denied');
    expect(pod.status?.phase).toBe('Failed');
    expect(pod.status?.initContainerStatuses?.[0]?.state?.terminated?.exitCode).toBe(1);
    expect(await logsOf('denied', 'datakey-agent')).toContain(
      `forbidden: serviceaccount ${ns}:nobody cannot decrypt datakey orders in namespace ${ns}`,
    );
    const events = await eventsFor(ns, 'denied', 'DataKeyDeliveryDenied');
    expect(events.map((e) => e.message)).toContainEqual(expect.stringContaining('cannot decrypt'));
  });

  test('a pod that asks for a DataKey that does not exist yet waits for it, then gets it', async () => {
    await applyObjects([keyReader('waiter', { keys: 'later' })]);
    await eventually('the agent says what it waits for', 60_000, async () => {
      const r = await kubectl(['logs', '-n', ns, 'waiter', '-c', 'datakey-agent']);
      return r.stdout.includes('waiting: DataKey later does not exist') ? r : undefined;
    });
    await applyObjects([dataKey(ns, 'later', { masterKeyRef: { name: suite.mk('inject') } })]);
    await podFinished('waiter');
    const out = await logsOf('waiter', 'app');
    expect(out).toMatch(/^later\nlater.generation\nlater.generations\ndone$/m);
    expect((await eventsFor(ns, 'waiter', 'DataKeyNotReady')).length).toBeGreaterThan(0);
  });

  /** Runs the agent image by hand in a pod the webhook does not touch. */
  function manualAgentPod(name: string, audience: string, memory: boolean): Json {
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: ns },
      spec: {
        nodeName,
        restartPolicy: 'Never',
        serviceAccountName: 'app',
        securityContext: { runAsNonRoot: true, runAsUser: 65532 },
        volumes: [
          { name: 'keys', emptyDir: memory ? { medium: 'Memory' } : {} },
          {
            name: 'token',
            projected: { sources: [{ serviceAccountToken: { audience, path: 'token' } }] },
          },
        ],
        initContainers: [
          {
            name: 'datakey-agent',
            image: OPERATOR_IMAGE,
            imagePullPolicy: 'Never',
            args: [
              'agent',
              '--url',
              `https://${BRIDGE_IP}:${port}`,
              '--keys',
              'orders',
              '--dir',
              '/keys',
              '--token-file',
              '/token/token',
              '--timeout',
              '5s',
            ],
            env: [{ name: 'DATAKEY_AGENT_CA', value: caBundle }],
            volumeMounts: [
              { name: 'keys', mountPath: '/keys' },
              { name: 'token', mountPath: '/token' },
            ],
          },
        ],
        containers: [
          {
            name: 'app',
            image: BUSYBOX_IMAGE,
            imagePullPolicy: 'Never',
            command: ['sh', '-c', 'ls -A /keys | wc -l'],
            volumeMounts: [{ name: 'keys', mountPath: '/keys' }],
          },
        ],
      },
    };
  }

  test('a token for another audience is refused, and the refusal is an Event on its pod', async () => {
    await applyObjects([manualAgentPod('wrong-audience', 'not-datakey', true)]);
    const pod = await podFinished('wrong-audience');
    expect(pod.status?.phase).toBe('Failed');
    expect(await logsOf('wrong-audience', 'datakey-agent')).toContain(
      `the token is not for audience ${AGENT_AUDIENCE}`,
    );
    const events = await eventsFor(ns, 'wrong-audience', 'DataKeyDeliveryDenied');
    expect(events.length).toBeGreaterThan(0);
  });

  test('the agent writes nothing unless the target is a tmpfs, and says so on the pod', async () => {
    // The pod is not annotated: the operator refuses it anyway, but the agent stops first.
    await applyObjects([manualAgentPod('on-disk', AGENT_AUDIENCE, false)]);
    const pod = await podFinished('on-disk');
    expect(pod.status?.phase).toBe('Failed');
    expect(await logsOf('on-disk', 'datakey-agent')).toMatch(
      /refusing to write keys: \/keys is on \w+ .*not a tmpfs memory volume/,
    );
    const events = await eventsFor(ns, 'on-disk', 'DataKeyAgentFailed');
    expect(events.map((e) => e.message)).toContainEqual(expect.stringContaining('not a tmpfs'));
  });

  /** Calls the delivery endpoint from the host, as a pod would. */
  /** One delivery request; a 429 (the per-pod limit) is waited out as its Retry-After says, as the agent does. */
  async function deliver(token: string, body: Json): Promise<{ status: number; text: string }> {
    for (;;) {
      const res = await deliverOnce(token, body);
      if (res.status !== 429) return { status: res.status, text: res.text };
      await sleep(Number(res.retryAfter ?? '1') * 1000);
    }
  }

  function deliverOnce(
    token: string,
    body: Json,
  ): Promise<{ status: number; text: string; retryAfter?: string }> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        `https://127.0.0.1:${port}${DELIVER_PATH}`,
        {
          method: 'POST',
          ca: caBundle,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        },
        (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              text,
              retryAfter: res.headers['retry-after'] as string | undefined,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  }

  async function boundToken(podName: string, uid: string): Promise<string> {
    const r = await client.create<KubeObject & { status: { token: string } }>(
      `/api/v1/namespaces/${ns}/serviceaccounts/app/token`,
      {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        metadata: { name: 'app' },
        spec: {
          audiences: [AGENT_AUDIENCE],
          expirationSeconds: 600,
          boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: podName, uid },
        },
      },
    );
    return r.status.token;
  }

  test('forged, foreign and dead-pod tokens get nothing', async () => {
    const forged =
      Buffer.from('{"alg":"RS256","kid":"x"}').toString('base64url') +
      '.' +
      Buffer.from(JSON.stringify({ sub: `system:serviceaccount:${ns}:app` })).toString(
        'base64url',
      ) +
      '.c2lnbmF0dXJl';
    const a = await deliver(forged, { keys: ['orders'] });
    expect(a.status).toBe(401);
    expect(a.text).not.toContain('plaintext');

    const reader = await client.get<Pod>(podPath('reader'));
    const token = await boundToken('reader', reader.metadata.uid as string);
    const foreign = await deliver(token, { keys: ['orders'], podName: 'someone-else' });
    expect(foreign.status).toBe(403);
    expect(foreign.text).toContain(`the token belongs to pod ${ns}/reader`);
    const notAsked = await deliver(token, { keys: ['payments'], podName: 'reader' });
    expect(notAsked.status).toBe(403);
    expect(notAsked.text).toContain('does not ask for DataKey payments');

    const plainPod = await client.get<Pod>(podPath('wrong-audience')); // not annotated
    const plainToken = await boundToken('wrong-audience', plainPod.metadata.uid as string);
    const unasked = await deliver(plainToken, { keys: ['orders'], podName: 'wrong-audience' });
    expect(unasked.status).toBe(403);
    expect(unasked.text).toContain('does not ask for DataKey orders');

    await kubectlOk(['delete', 'pod', '-n', ns, 'reader', '--wait=true']);
    const dead = await deliver(token, { keys: ['orders'], podName: 'reader' });
    expect(dead.status).toBe(401);
    expect(dead.text).not.toContain('plaintext');
  });

  test('pods without the annotation never reach the webhook, and start while it is down', async () => {
    const before = await admissions();
    const plain = (name: string) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: ns },
      spec: {
        nodeName,
        restartPolicy: 'Never',
        containers: [
          { name: 'app', image: BUSYBOX_IMAGE, imagePullPolicy: 'Never', command: ['true'] },
        ],
      },
    });
    await applyObjects([plain('plain-up')]);
    expect((await podFinished('plain-up')).status?.phase).toBe('Succeeded');
    expect(await admissions()).toBe(before);

    await op.kill9(); // an outage: a clean stop would remove the registration
    await applyObjects([plain('plain-down')]);
    expect((await podFinished('plain-down')).status?.phase).toBe('Succeeded');
    const refused = await applyObjects([keyReader('annotated-down')]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('inject.kms.datakey.io');
    expect(await getOrUndefined(podPath('annotated-down'))).toBeUndefined();
    op = await startInjectingOperator();
  });

  test('a clean stop unregisters; the serving certificate is renewed without a restart, under the same CA', async () => {
    await op.stop();
    expect(
      await getOrUndefined(
        `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${mwc}`,
      ),
    ).toBeUndefined(); // a clean stop outside a cluster removes its own registration
    op = await startInjectingOperator(['--webhook-cert-validity', '30s']);
    const served = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port, ca: caBundle }, () => {
          resolve(socket.getPeerX509Certificate()?.serialNumber ?? '');
          socket.end();
        });
        socket.on('error', reject);
      });
    const first = await served();
    await eventually('a renewed certificate served', 60_000, async () =>
      (await served()) !== first ? true : undefined,
    );
    await applyObjects([keyReader('after-renewal')]);
    expect((await podFinished('after-renewal')).status?.phase).toBe('Succeeded');
  });

  test('leak scan: no injected key in agent logs, pod specs, events or environment', async () => {
    await decryptedHash('payments'); // the scan also looks for a key that was never injected
    controlSecret = await secretOf('payments'); // current: rotation re-wrapped the earlier ones
    const needles = needlesOf(obtainedPlaintexts);
    expect(agentLogs.length).toBeGreaterThan(3);
    expect(findNeedles(Buffer.from(agentLogs.join('\n')), needles)).toEqual([]);
    const pods = await client.list<Pod>(podsPath);
    expect(findNeedles(Buffer.from(JSON.stringify(pods)), needles)).toEqual([]);
    const events = await client.list<KubeObject>(`/api/v1/namespaces/${ns}/events`);
    expect(findNeedles(Buffer.from(JSON.stringify(events)), needles)).toEqual([]);
  });

  leakScanTests(suite, () => controlSecret);
}

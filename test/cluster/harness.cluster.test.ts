// Self-test of the cluster harness: the API server behaviours the operator
// relies on, each asserted against the real control plane.
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  AdmissionregistrationV1Api,
  ApiException,
  ApiextensionsV1Api,
  AuthenticationV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  RbacAuthorizationV1Api,
  VersionApi,
  Watch,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import { readVersions } from '../../harness/devcluster/build';
import { createCA, createLeaf } from '../../harness/devcluster/pki';
import { eventually } from '../helpers/wait';

const kc = new KubeConfig();
kc.loadFromDefault();
const core = kc.makeApiClient(CoreV1Api);
const ext = kc.makeApiClient(ApiextensionsV1Api);
const custom = kc.makeApiClient(CustomObjectsApi);
const authn = kc.makeApiClient(AuthenticationV1Api);
const authz = kc.makeApiClient(AuthorizationV1Api);
const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
const admission = kc.makeApiClient(AdmissionregistrationV1Api);

const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`;
const ns = `harness-${suffix}`;

function statusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

/** Resolves with the HTTP status of a rejected API call (fails if it succeeded). */
async function apiError(p: Promise<unknown>): Promise<ApiException<unknown>> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiException) return err;
    throw err;
  }
  throw new Error('expected the API call to fail, it succeeded');
}

async function gone(read: () => Promise<unknown>): Promise<true | undefined> {
  try {
    await read();
    return undefined;
  } catch (err) {
    if (statusOf(err) === 404) return true;
    throw err;
  }
}

beforeAll(async () => {
  await core.createNamespace({ body: { metadata: { name: ns } } });
  // Pods need the namespace's default service account (kube-controller-manager creates it).
  await eventually('the default service account', 60_000, async () =>
    core.readNamespacedServiceAccount({ namespace: ns, name: 'default' }),
  );
});

afterAll(async () => {
  await core.deleteNamespace({ name: ns }).catch(() => undefined);
});

// Tests that only hold for this project's own control plane: a caller-supplied
// cluster (e.g. kind) runs its own version and cannot reach 127.0.0.1 of this process.
const localOnly = process.env.DATAKEY_LOCAL_CLUSTER === '1' ? test : test.skip;

localOnly('the local control plane reports the pinned Kubernetes version', async () => {
  const info = await kc.makeApiClient(VersionApi).getCode();
  expect(info.gitVersion).toBe(readVersions().kubernetes);
});

test('a CRD with a structural schema and status subresource is Established and validates', async () => {
  const group = `h${suffix}.datakey.io`;
  const name = `widgets.${group}`;
  await ext.createCustomResourceDefinition({
    body: {
      metadata: { name },
      spec: {
        group,
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            subresources: { status: {} },
            schema: {
              openAPIV3Schema: {
                type: 'object',
                properties: {
                  spec: {
                    type: 'object',
                    required: ['size'],
                    properties: { size: { type: 'integer', minimum: 1, maximum: 10 } },
                  },
                  status: { type: 'object', properties: { ready: { type: 'boolean' } } },
                },
              },
            },
          },
        ],
      },
    },
  });
  try {
    await eventually('the CRD to be Established', 60_000, async () => {
      const crd = await ext.readCustomResourceDefinition({ name });
      const c = crd.status?.conditions?.find((x) => x.type === 'Established');
      return c?.status === 'True' ? crd : undefined;
    });
    const obj = (spec: unknown): object => ({
      apiVersion: `${group}/v1`,
      kind: 'Widget',
      metadata: { name: `w-${Math.floor(Math.random() * 1e6)}` },
      spec,
    });
    const target = { group, version: 'v1', namespace: ns, plural: 'widgets' };
    // The discovery of a new group can lag Established by a moment: retry the first create.
    const created = (await eventually('a valid Widget to be accepted', 30_000, async () =>
      custom.createNamespacedCustomObject({ ...target, body: obj({ size: 3 }) }),
    )) as { metadata: { name: string; generation: number } };

    const invalid = await apiError(
      custom.createNamespacedCustomObject({ ...target, body: obj({ size: 0 }) }),
    );
    expect(invalid.code).toBe(422);
    expect(
      typeof invalid.body === 'string' ? invalid.body : JSON.stringify(invalid.body),
    ).toContain('spec.size');
    const missing = await apiError(
      custom.createNamespacedCustomObject({ ...target, body: obj({}) }),
    );
    expect(missing.code).toBe(422);

    // Status goes through the subresource only and does not bump the generation.
    const current = (await custom.getNamespacedCustomObject({
      ...target,
      name: created.metadata.name,
    })) as {
      metadata: { generation: number };
    };
    const withStatus = (await custom.replaceNamespacedCustomObjectStatus({
      ...target,
      name: created.metadata.name,
      body: { ...current, status: { ready: true } },
    })) as { status?: { ready?: boolean }; metadata: { generation: number } };
    expect(withStatus.status?.ready).toBe(true);
    expect(withStatus.metadata.generation).toBe(created.metadata.generation);
  } finally {
    await ext.deleteCustomResourceDefinition({ name });
  }
});

test('an update with a stale resourceVersion gets 409 Conflict', async () => {
  const name = 'conflict';
  const v1 = await core.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name }, data: { n: '1' } },
  });
  try {
    const v2 = await core.replaceNamespacedConfigMap({
      namespace: ns,
      name,
      body: { ...v1, data: { n: '2' } },
    });
    expect(v2.metadata?.resourceVersion).not.toBe(v1.metadata?.resourceVersion);
    const stale = await apiError(
      core.replaceNamespacedConfigMap({ namespace: ns, name, body: { ...v1, data: { n: '3' } } }),
    );
    expect(stale.code).toBe(409);
    const now = await core.readNamespacedConfigMap({ namespace: ns, name });
    expect(now.data).toEqual({ n: '2' });
  } finally {
    await core.deleteNamespacedConfigMap({ namespace: ns, name });
  }
});

test('a watch sees a change', async () => {
  const name = 'watched';
  const created = await core.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name }, data: { v: 'a' } },
  });
  const seen: { phase: string; obj: V1ConfigMap }[] = [];
  let controller: AbortController | undefined;
  try {
    controller = await new Watch(kc).watch(
      `/api/v1/namespaces/${ns}/configmaps`,
      // Start right after the create: the update below is delivered however late the watch connects.
      {
        fieldSelector: `metadata.name=${name}`,
        resourceVersion: created.metadata?.resourceVersion,
      },
      (phase, obj: V1ConfigMap) => seen.push({ phase, obj }),
      () => undefined,
    );
    await core.replaceNamespacedConfigMap({
      namespace: ns,
      name,
      body: { ...created, data: { v: 'b' } },
    });
    const ev = await eventually('the MODIFIED event', 30_000, async () =>
      seen.find((e) => e.phase === 'MODIFIED' && e.obj.data?.v === 'b'),
    );
    expect(ev.obj.metadata?.name).toBe(name);
  } finally {
    controller?.abort();
    await core.deleteNamespacedConfigMap({ namespace: ns, name });
  }
});

test('deleting an owner garbage-collects its dependent', async () => {
  const owner = await core.createNamespacedConfigMap({
    namespace: ns,
    body: { metadata: { name: 'owner' } },
  });
  await core.createNamespacedConfigMap({
    namespace: ns,
    body: {
      metadata: {
        name: 'dependent',
        ownerReferences: [
          { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata!.uid! },
        ],
      },
    },
  });
  await core.deleteNamespacedConfigMap({
    namespace: ns,
    name: 'owner',
    propagationPolicy: 'Background',
  });
  await eventually('the dependent to be garbage-collected', 60_000, () =>
    gone(() => core.readNamespacedConfigMap({ namespace: ns, name: 'dependent' })),
  );
});

test('deleting a namespace completes', async () => {
  const name = `${ns}-doomed`;
  await core.createNamespace({ body: { metadata: { name } } });
  await core.createNamespacedConfigMap({
    namespace: name,
    body: { metadata: { name: 'content' } },
  });
  await core.deleteNamespace({ name });
  await eventually('the namespace to be gone', 120_000, () =>
    gone(() => core.readNamespace({ name })),
  );
});

describe('service-account identity', () => {
  const sa = 'harness-sa';
  const user = `system:serviceaccount:${ns}:${sa}`;

  beforeAll(async () => {
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: sa } } });
  });
  afterAll(async () => {
    await core.deleteNamespacedServiceAccount({ namespace: ns, name: sa }).catch(() => undefined);
  });

  test('TokenRequest then TokenReview authenticates it for the chosen audience only', async () => {
    const audience = 'datakey-harness';
    const tr = await core.createNamespacedServiceAccountToken({
      namespace: ns,
      name: sa,
      body: { spec: { audiences: [audience], expirationSeconds: 600 } },
    });
    const token = tr.status!.token;
    expect(token.length).toBeGreaterThan(20);

    const ok = await authn.createTokenReview({ body: { spec: { token, audiences: [audience] } } });
    expect(ok.status?.authenticated).toBe(true);
    expect(ok.status?.user?.username).toBe(user);
    expect(ok.status?.audiences).toEqual([audience]);
    expect(ok.status?.user?.groups).toContain(`system:serviceaccounts:${ns}`);

    const wrong = await authn.createTokenReview({
      body: { spec: { token, audiences: ['someone-else'] } },
    });
    expect(wrong.status?.authenticated).not.toBe(true);
  });

  test('a SubjectAccessReview answers per RBAC', async () => {
    await rbac.createNamespacedRole({
      namespace: ns,
      body: {
        metadata: { name: 'decrypt-a' },
        rules: [
          {
            apiGroups: ['kms.datakey.io'],
            resources: ['datakeys'],
            verbs: ['decrypt'],
            resourceNames: ['a'],
          },
        ],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'decrypt-a' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'decrypt-a' },
        subjects: [{ kind: 'ServiceAccount', name: sa, namespace: ns }],
      },
    });
    try {
      const review = async (name: string, namespace = ns): Promise<boolean | undefined> => {
        const r = await authz.createSubjectAccessReview({
          body: {
            spec: {
              user,
              groups: [
                'system:serviceaccounts',
                `system:serviceaccounts:${ns}`,
                'system:authenticated',
              ],
              resourceAttributes: {
                group: 'kms.datakey.io',
                resource: 'datakeys',
                verb: 'decrypt',
                name,
                namespace,
              },
            },
          },
        });
        return r.status?.allowed;
      };
      // The RBAC authorizer's caches follow the new binding within moments.
      await eventually('the binding to allow decrypt of a', 30_000, async () =>
        (await review('a')) ? true : undefined,
      );
      expect(await review('b')).toBe(false);
      expect(await review('a', 'default')).toBe(false);
    } finally {
      await rbac.deleteNamespacedRoleBinding({ namespace: ns, name: 'decrypt-a' });
      await rbac.deleteNamespacedRole({ namespace: ns, name: 'decrypt-a' });
    }
  });
});

localOnly('a mutating webhook on 127.0.0.1 mutates a created Pod', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'datakey-webhook-'));
  const webhookName = `harness-${suffix}`;
  const requests: string[] = [];
  let server: https.Server | undefined;
  try {
    const ca = createCA(dir, 'ca', 'harness-webhook-ca');
    const leaf = createLeaf(dir, 'server', ca, {
      commonName: '127.0.0.1',
      altNames: ['IP:127.0.0.1'],
      usage: 'server',
    });
    server = https.createServer({
      cert: fs.readFileSync(leaf.cert),
      key: fs.readFileSync(leaf.key),
    });
    server.on('request', (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        const review = JSON.parse(body) as {
          request: { uid: string; object: { metadata: { name?: string } } };
        };
        requests.push(review.request.object.metadata.name ?? '');
        const patch = [
          { op: 'add', path: '/metadata/labels', value: { 'harness.datakey.io/mutated': 'true' } },
          {
            op: 'add',
            path: '/metadata/annotations',
            value: { 'harness.datakey.io/by': 'webhook' },
          },
        ];
        res.setHeader('Content-Type', 'application/json');
        res.end(
          JSON.stringify({
            apiVersion: 'admission.k8s.io/v1',
            kind: 'AdmissionReview',
            response: {
              uid: review.request.uid,
              allowed: true,
              patchType: 'JSONPatch',
              patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
            },
          }),
        );
      });
    });
    const srv = server;
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;

    await admission.createMutatingWebhookConfiguration({
      body: {
        metadata: { name: webhookName },
        webhooks: [
          {
            name: 'mutate.harness.datakey.io',
            clientConfig: {
              url: `https://127.0.0.1:${port}/mutate`,
              caBundle: fs.readFileSync(ca.cert).toString('base64'),
            },
            rules: [
              { operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] },
            ],
            namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } },
            sideEffects: 'None',
            admissionReviewVersions: ['v1'],
            failurePolicy: 'Fail',
            timeoutSeconds: 10,
          },
        ],
      },
    });

    // The API server picks up a new webhook configuration within moments: create
    // pods until one comes back mutated.
    let attempt = 0;
    const pod = await eventually('a Pod mutated by the webhook', 30_000, async () => {
      const name = `mutated-${attempt++}`;
      const p = await core.createNamespacedPod({
        namespace: ns,
        body: {
          metadata: { name },
          spec: {
            automountServiceAccountToken: false,
            containers: [{ name: 'c', image: 'registry.invalid/none:1' }],
          },
        },
      });
      if (p.metadata?.labels?.['harness.datakey.io/mutated'] === 'true') return p;
      await core.deleteNamespacedPod({ namespace: ns, name, gracePeriodSeconds: 0 });
      return undefined;
    });
    expect(pod.metadata?.annotations?.['harness.datakey.io/by']).toBe('webhook');
    expect(requests).toContain(pod.metadata?.name);
    const stored = await core.readNamespacedPod({ namespace: ns, name: pod.metadata!.name! });
    expect(stored.metadata?.labels?.['harness.datakey.io/mutated']).toBe('true');
    await core.deleteNamespacedPod({
      namespace: ns,
      name: pod.metadata!.name!,
      gracePeriodSeconds: 0,
    });
  } finally {
    await admission
      .deleteMutatingWebhookConfiguration({ name: webhookName })
      .catch(() => undefined);
    const srv = server;
    if (srv) await new Promise((r) => srv.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

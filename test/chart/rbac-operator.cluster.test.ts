// The operator (a host process) running with nothing but the chart's RBAC: a
// token of the chart's ServiceAccount instead of admin credentials. MasterKey
// and DataKey become Ready, a deleted Secret is restored, a rotation re-wraps,
// workloads are rolled after a regeneration only with workloadRestarts.enabled
// (an Event says so otherwise), deletion releases the finalizer, and no request
// is ever forbidden but that deliberate one. This
// checks the hand-derived ClusterRole and Role against the real code paths.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/kms-process';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  dataKeysPath,
  decryptSecret,
  eventsFor,
  getOrUndefined,
  kubectl,
  kubectlOk,
  leakScanTests,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitCondition,
  type DataKeyObject,
  type SecretObject,
} from '../helpers/operator-suite';
import { HELM_BUILD_TIMEOUT_MS, render, type Rendered } from '../helpers/helm';
import { eventually } from '../helpers/wait';

const suite = useOperatorSuite('rbacop');
// Contains the chart name, so the ServiceAccount and roles are named exactly this.
const release = `datakey-operator-${suite.id}`;
const mk = suite.mk('pay');
let rbac: Rendered[] = [];
let op: OperatorProcess;
let secret: SecretObject | undefined;

const asList = (items: Rendered[]) => JSON.stringify({ apiVersion: 'v1', kind: 'List', items });

/** A kubeconfig of the admin one's cluster with the ServiceAccount's token as its user. */
async function serviceAccountKubeconfig(): Promise<string> {
  const admin = JSON.parse(await kubectlOk(['config', 'view', '--raw', '--minify', '-o', 'json']));
  const token = (
    await kubectlOk(['create', 'token', release, '-n', suite.operatorNs, '--duration=2h'])
  ).trim();
  const cluster = admin.clusters[0];
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [cluster],
    users: [{ name: 'operator', user: { token } }],
    contexts: [{ name: 'operator', context: { cluster: cluster.name, user: 'operator' } }],
    'current-context': 'operator',
  };
  const file = path.join(makeTempDir('datakey-sa-kubeconfig-'), 'kubeconfig');
  fs.writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
  return file;
}

beforeAll(async () => {
  // Helm creates the release namespace; the ServiceAccount may not create it.
  await kubectlOk(['create', 'namespace', suite.operatorNs]);
  const kinds = ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'];
  const rendered = await render('helm', { namespace: suite.operatorNs, release });
  rbac = rendered.filter((o) => kinds.includes(o.kind));
  await kubectlOk(['apply', '-f', '-'], asList(rbac));
  op = await suite.start({ kubeconfig: await serviceAccountKubeconfig() });
}, HELM_BUILD_TIMEOUT_MS);

afterAll(async () => {
  // The suite's own cleanup (registered first) has already removed what the test made.
  if (rbac.length > 0) await kubectl(['delete', '--ignore-not-found', '-f', '-'], asList(rbac));
});

test('it leads: the Lease is created and renewed in the release namespace', async () => {
  await eventually('leader', 30_000, async () => ((await op.leader()) === 1 ? true : undefined));
  const lease = await client.get<{ metadata: { name: string }; spec: { holderIdentity?: string } }>(
    `/apis/coordination.k8s.io/v1/namespaces/${suite.operatorNs}/leases/datakey-operator`,
  );
  expect(lease.spec.holderIdentity).toBeTruthy();
});

test('a MasterKey and a DataKey become Ready; the Secret decrypts', async () => {
  await applyObjects([
    masterKey(mk),
    dataKey(suite.ns, 'orders', { masterKeyRef: { name: mk }, encryptionContext: { app: 'o' } }),
  ]);
  await waitCondition(`${masterKeysPath}/${mk}`, 'True', 'KeyEnabled');
  await waitCondition(`${dataKeysPath(suite.ns)}/orders`, 'True', 'DataKeyReady');
  secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/orders`);
  expect(await decryptSecret(op, secret)).toHaveLength(32);
});

test('a deleted DataKey Secret is restored with the same data key', async () => {
  const before = secret?.data?.ciphertextBlob;
  await client.delete(`${secretsPath(suite.ns)}/orders`);
  const restored = await eventually('Secret restored', 30_000, () =>
    getOrUndefined<SecretObject>(`${secretsPath(suite.ns)}/orders`),
  );
  expect(restored.data?.ciphertextBlob).toBe(before);
});

test('a rotation re-wraps the DataKey (Secret replaced, status patched)', async () => {
  await client.mergePatch(`${masterKeysPath}/${mk}`, {
    metadata: { annotations: { 'kms.datakey.io/rotate': 'once' } },
  });
  const dk = await eventually('DataKey on the Advance flow', 60_000, async () => {
    const d = await client.get<DataKeyObject>(`${dataKeysPath(suite.ns)}/orders`);
    return d.status?.flow === 'Advance' ? d : undefined;
  });
  secret = await eventually('Secret re-wrapped', 30_000, async () => {
    const s = await client.get<SecretObject>(`${secretsPath(suite.ns)}/orders`);
    return Buffer.from(s.data?.flow ?? '', 'base64').toString() === 'Advance' ? s : undefined;
  });
  expect(Buffer.from(secret.data?.keyVersionId ?? '', 'base64').toString()).toBe(
    dk.status?.keyVersionId,
  );
  expect(await decryptSecret(op, secret)).toHaveLength(32);
});

const followerPath = `/apis/apps/v1/namespaces/${suite.ns}/deployments/follower`;
type Deployment = DataKeyObject & {
  spec: { template: { metadata: { annotations?: Record<string, string> } } };
};
const regenerate = (token: string) =>
  client.mergePatch(`${dataKeysPath(suite.ns)}/orders`, {
    metadata: { annotations: { 'kms.datakey.io/regenerate': token } },
  });

test('without workloadRestarts.enabled a regeneration rolls nothing, and a WorkloadRestartForbidden Event says why', async () => {
  // No replicas: the roll is a change of the template, no pod needs to run.
  await applyObjects([
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'follower', namespace: suite.ns },
      spec: {
        replicas: 0,
        selector: { matchLabels: { app: 'follower' } },
        template: {
          metadata: {
            labels: { app: 'follower' },
            annotations: {
              'kms.datakey.io/inject': 'orders',
              'kms.datakey.io/restart-on-regenerate': 'true',
            },
          },
          spec: { containers: [{ name: 'app', image: 'busybox' }] },
        },
      },
    },
  ]);
  await regenerate('r1');
  const [event] = await eventually('a WorkloadRestartForbidden event', 30_000, async () => {
    const e = await eventsFor(suite.ns, 'orders', 'WorkloadRestartForbidden');
    return e.length > 0 ? e : undefined;
  });
  expect(event.type).toBe('Warning');
  expect(event.message).toContain('workloadRestarts.enabled=true');
  const follower = await client.get<Deployment>(followerPath);
  expect(
    follower.spec.template.metadata.annotations?.['kms.datakey.io/restartedAt'],
  ).toBeUndefined();
});

test('with workloadRestarts.enabled the next regeneration rolls the workload, once', async () => {
  const enabled = await render('helm', {
    namespace: suite.operatorNs,
    release,
    args: ['--set', 'workloadRestarts.enabled=true'],
  });
  await kubectlOk(['apply', '-f', '-'], asList(enabled.filter((o) => o.kind === 'ClusterRole')));
  const sa = `system:serviceaccount:${suite.operatorNs}:${release}`;
  await eventually('the permission in effect', 30_000, async () =>
    (await kubectl(['auth', 'can-i', 'patch', 'deployments', '-n', suite.ns, '--as', sa])).code ===
    0
      ? true
      : undefined,
  );
  await regenerate('r2');
  const rolled = await eventually('follower rolled', 30_000, async () => {
    const d = await client.get<Deployment>(followerPath);
    return d.spec.template.metadata.annotations?.['kms.datakey.io/restartedAt'] ? d : undefined;
  });
  expect(rolled.metadata.annotations?.['kms.datakey.io/restarted-for']).toBe('{"orders":3}');
  const events = await eventually('a RestartedForDataKey event', 15_000, async () => {
    const e = await eventsFor(suite.ns, 'follower', 'RestartedForDataKey');
    return e.length > 0 ? e : undefined;
  });
  expect(events).toHaveLength(1);
  secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/orders`);
});

// Before the deletion: the scan's control is this Secret's ciphertext in etcd.
leakScanTests(suite, () => secret);

test('deleting the DataKey, then the MasterKey: its finalizer is released', async () => {
  await kubectlOk(['delete', 'datakey', 'orders', '-n', suite.ns, '--wait=true']);
  await kubectlOk(['delete', 'masterkey', mk, '--wait=false']);
  await eventually(`${mk} deleted`, 30_000, async () =>
    (await getOrUndefined(`${masterKeysPath}/${mk}`)) ? undefined : true,
  );
});

test('no request of the operator was refused (no 403 in its log)', () => {
  expect(op.lines.length).toBeGreaterThan(0);
  expect(op.lines.filter((l) => /forbidden|\b403\b/i.test(l))).toEqual([]);
});

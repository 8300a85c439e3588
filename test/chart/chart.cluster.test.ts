// The chart against the real API server: everything helm 3 and helm 4 render
// passes `kubectl apply --dry-run=server` (schemas, CEL match conditions,
// RBAC objects), and the ServiceAccount's RBAC, applied for real, allows
// exactly what the operator calls and refuses the rest (kubectl auth can-i).
import * as path from 'node:path';
import { kubectl, kubectlOk } from '../helpers/operator-suite';
import {
  CHART,
  HELMS,
  HELM_BUILD_TIMEOUT_MS,
  helmBinaries,
  render,
  templateText,
  type Rendered,
} from '../helpers/helm';

// Namespaces and names of this file only: a real `helm install` into
// datakey-system may run in the same cluster at the same time.
const id = `chart-${Date.now().toString(36)}`;
const dryRunNs = `${id}-dry`;
const rbacNs = `${id}-sys`;
const appNs = `${id}-app`;
// Contains the chart name, so every object is named exactly this.
const rbacRelease = `datakey-operator-${id}`;
const sa = `system:serviceaccount:${rbacNs}:${rbacRelease}`;
let rbacObjects: Rendered[] = [];

const asList = (items: Rendered[]) => JSON.stringify({ apiVersion: 'v1', kind: 'List', items });

beforeAll(async () => {
  await helmBinaries();
  // The chart's own copy of the CRDs (helm installs crds/ before the templates).
  await kubectlOk(['apply', '--server-side', '-f', path.join(CHART, 'crds')]);
  await kubectlOk(['wait', '--for=condition=Established', 'crd', '--all', '--timeout=60s']);
  for (const ns of [dryRunNs, rbacNs]) await kubectlOk(['create', 'namespace', ns]);
}, HELM_BUILD_TIMEOUT_MS);

afterAll(async () => {
  if (rbacObjects.length > 0)
    await kubectl(['delete', '--ignore-not-found', '-f', '-'], asList(rbacObjects));
  for (const ns of [dryRunNs, rbacNs])
    await kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found']);
});

test.each(HELMS)(
  '%s: helm template | kubectl apply --dry-run=server accepts every object',
  async (_label, major) => {
    // The NetworkPolicy too; not the ServiceMonitor (no Prometheus Operator CRDs here).
    const manifests = await templateText(major, {
      args: ['--set', 'networkPolicy.enabled=true'],
      namespace: dryRunNs,
    });
    const r = await kubectl(['apply', '--dry-run=server', '-f', '-'], manifests);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const applied = r.stdout.trim().split('\n').sort();
    expect(applied).toEqual(
      [
        'clusterrole.rbac.authorization.k8s.io/datakey-operator created (server dry run)',
        'clusterrolebinding.rbac.authorization.k8s.io/datakey-operator created (server dry run)',
        'deployment.apps/datakey-operator created (server dry run)',
        'mutatingwebhookconfiguration.admissionregistration.k8s.io/datakey-operator created (server dry run)',
        'networkpolicy.networking.k8s.io/datakey-operator created (server dry run)',
        'poddisruptionbudget.policy/datakey-operator created (server dry run)',
        'role.rbac.authorization.k8s.io/datakey-operator created (server dry run)',
        'rolebinding.rbac.authorization.k8s.io/datakey-operator created (server dry run)',
        'service/datakey-operator-metrics created (server dry run)',
        'service/datakey-operator-webhook created (server dry run)',
        'serviceaccount/datakey-operator created (server dry run)',
      ].sort(),
    );
  },
);

/** `kubectl auth can-i` as the operator's ServiceAccount: true for "yes". */
async function canI(args: string[]): Promise<boolean> {
  const r = await kubectl(['auth', 'can-i', '--as', sa, ...args]);
  if (r.code !== 0 && r.code !== 1) throw new Error(`kubectl auth can-i failed: ${r.stderr}`);
  return r.code === 0;
}

const mk = 'masterkeys.kms.datakey.io';
const dk = 'datakeys.kms.datakey.io';
const mwc = 'mutatingwebhookconfigurations.admissionregistration.k8s.io';

/** Every call the operator makes (src/operator, src/controllers, src/runtime, injection). */
const allowed: string[][] = [
  ['list', mk],
  ['watch', mk],
  ['patch', mk], // the finalizer
  ['patch', mk, '--subresource=status'],
  ['list', dk, '--all-namespaces'],
  ['watch', dk, '--all-namespaces'],
  ['patch', dk, '--subresource=status', '-n', appNs],
  ['update', dk, '--subresource=finalizers', '-n', appNs],
  ['list', 'secrets', '--all-namespaces'],
  ['watch', 'secrets', '--all-namespaces'],
  ['get', 'secrets', '-n', appNs],
  ['create', 'secrets', '-n', appNs],
  ['update', 'secrets', '-n', appNs],
  ['delete', 'secrets', '-n', rbacNs], // key store entries
  ['create', 'events', '-n', appNs],
  ['patch', 'events', '-n', appNs],
  ['get', `namespaces/${rbacNs}`],
  ['get', 'leases.coordination.k8s.io/datakey-operator', '-n', rbacNs],
  ['create', 'leases.coordination.k8s.io', '-n', rbacNs],
  ['update', 'leases.coordination.k8s.io/datakey-operator', '-n', rbacNs],
  ['create', 'tokenreviews.authentication.k8s.io'],
  ['create', 'subjectaccessreviews.authorization.k8s.io'],
  ['get', 'pods', '-n', appNs],
  ['get', `${mwc}/${rbacRelease}`],
  ['patch', `${mwc}/${rbacRelease}`],
];

/** What it must never be able to do. */
const refused: string[][] = [
  ['create', 'pods', '-n', appNs],
  ['patch', 'pods', '-n', appNs],
  ['delete', 'pods', '-n', appNs],
  ['list', 'pods', '--all-namespaces'],
  ['create', 'pods', '--subresource=exec', '-n', appNs],
  ['get', 'configmaps', '-n', appNs],
  ['create', 'configmaps', '-n', rbacNs],
  ['create', 'deployments.apps', '-n', appNs],
  ['patch', 'deployments.apps', '-n', rbacNs],
  ['list', 'nodes'],
  ['create', 'clusterroles.rbac.authorization.k8s.io'],
  ['bind', 'clusterroles.rbac.authorization.k8s.io'],
  ['escalate', 'roles.rbac.authorization.k8s.io', '-n', rbacNs],
  ['create', 'serviceaccounts', '--subresource=token', '-n', appNs],
  ['create', 'serviceaccounts', '--subresource=token', '-n', rbacNs],
  ['impersonate', 'serviceaccounts', '-n', appNs],
  ['create', 'customresourcedefinitions.apiextensions.k8s.io'],
  ['update', 'customresourcedefinitions.apiextensions.k8s.io'],
  ['delete', 'customresourcedefinitions.apiextensions.k8s.io'],
  ['get', `${mwc}/another-webhook`],
  ['patch', `${mwc}/another-webhook`],
  ['list', mwc],
  ['create', mwc],
  ['delete', `${mwc}/${rbacRelease}`],
  ['patch', 'validatingwebhookconfigurations.admissionregistration.k8s.io'],
  ['delete', 'secrets', '-n', appNs],
  ['patch', 'secrets', '-n', appNs],
  ['deletecollection', 'secrets', '-n', appNs],
  ['delete', 'secrets', '--all-namespaces'],
  ['create', 'leases.coordination.k8s.io', '-n', appNs],
  ['delete', 'leases.coordination.k8s.io', '-n', rbacNs],
  ['update', 'leases.coordination.k8s.io/kube-controller-manager', '-n', rbacNs],
  ['get', 'namespaces/kube-system'],
  ['create', 'namespaces'],
  ['delete', `namespaces/${rbacNs}`],
  ['create', mk],
  ['update', mk],
  ['delete', mk],
  ['create', dk, '-n', appNs],
  ['patch', dk, '-n', appNs], // the operator never writes spec
  ['delete', dk, '-n', appNs],
  ['decrypt', dk, '-n', appNs], // keys are for the pods allowed them, not the operator
];

describe('RBAC applied for real: the ServiceAccount can do what the operator does, nothing more', () => {
  beforeAll(async () => {
    const rbacKinds = [
      'ServiceAccount',
      'ClusterRole',
      'ClusterRoleBinding',
      'Role',
      'RoleBinding',
    ];
    const rendered = await render('helm', { namespace: rbacNs, release: rbacRelease });
    rbacObjects = rendered.filter((o) => rbacKinds.includes(o.kind));
    expect(rbacObjects).toHaveLength(rbacKinds.length);
    await kubectlOk(['apply', '-f', '-'], asList(rbacObjects));
  });

  const named = (checks: string[][]) => checks.map((args) => [args.join(' '), args] as const);

  test.each(named(allowed))('yes: %s', async (_name, args) => {
    expect(await canI(args)).toBe(true);
  });

  test.each(named(refused))('no: %s', async (_name, args) => {
    expect(await canI(args)).toBe(false);
  });
});

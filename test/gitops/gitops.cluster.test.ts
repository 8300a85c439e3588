// GitOps with the operator (a host process of the operator suites): the Argo CD
// health checks of docs/argocd/ run with lua5.4 against the very objects the
// API server and the operator produced, and the operator never writes `spec`,
// so re-applying examples/ server-side changes nothing (no drift for Argo CD
// or Flux).
import * as path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { KubeObject } from '../../src/runtime/kube-client';
import { argoHealth } from '../helpers/argocd';
import { eventually } from '../helpers/wait';
import {
  REPO,
  applyObjects,
  client,
  dataKey,
  dataKeysPath,
  kubectl,
  kubectlOk,
  masterKey,
  masterKeysPath,
  removeExampleObjects,
  useOperatorSuite,
  waitCondition,
} from '../helpers/operator-suite';

const suite = useOperatorSuite('gitops');
suite.extraMasterKeys.push('payments');
suite.extraNamespaces.push('shop');
const EXAMPLES = path.join(REPO, 'examples');

interface Versioned extends KubeObject {
  status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
}

/** Every version of the examples' objects seen by a watch, in order. */
const history: Record<string, Versioned[]> = {};
const watches: AbortController[] = [];

async function record(collection: string, kind: string): Promise<void> {
  const onEvent = (type: string, o: KubeObject) => {
    if (type !== 'ADDED' && type !== 'MODIFIED') return;
    (history[`${kind}/${o.metadata.name}`] ??= []).push(o as Versioned);
  };
  watches.push(await client.watch(collection, { watch: true }, onEvent, () => undefined));
}

const get = <T extends KubeObject = Versioned>(p: string) => client.get<T>(p);
const examplePaths = [
  `${masterKeysPath}/payments`,
  `${dataKeysPath('shop')}/orders`,
  `${dataKeysPath('shop')}/invoices`,
  '/api/v1/namespaces/shop',
];

beforeAll(async () => {
  await removeExampleObjects();
  await suite.start({ kms: false });
  // Started before the first apply: the first version recorded is the object
  // as created, before the operator touched it.
  await record(masterKeysPath, 'MasterKey');
  await record(dataKeysPath('shop'), 'DataKey');
});

afterAll(async () => {
  for (const w of watches) w.abort();
  await removeExampleObjects();
});

test('kubectl apply --server-side -f examples/: Ready, and the MasterKey settled', async () => {
  await kubectlOk(['apply', '--server-side', '-f', EXAMPLES]);
  await kubectlOk(['wait', '--for=condition=Ready', 'masterkey/payments', '--timeout=60s']);
  await kubectlOk([
    'wait',
    '--for=condition=Ready',
    'datakey',
    '--all',
    '-n',
    'shop',
    '--timeout=60s',
  ]);
  // Until its DataKeys have a key version, the MasterKey counts them as not yet
  // on the primary version (Rotating=True); it re-counts every second.
  await eventually('payments counts 2 of 2 DataKeys on its primary version', 30_000, async () => {
    const mk = await get<Versioned & { status?: { rotation?: Json } }>(
      `${masterKeysPath}/payments`,
    );
    return isDeepStrictEqual(mk.status?.rotation, { rewrapped: 2, total: 2 }) || undefined;
  });
});

test('Argo CD health of the recorded versions: Progressing as created, Healthy when Ready', async () => {
  const keys = ['MasterKey/payments', 'DataKey/orders', 'DataKey/invoices'];
  // The watch may deliver the latest version a moment after a GET returned it.
  await eventually('the watches caught up', 10_000, async () => {
    const live = await Promise.all(examplePaths.slice(0, 3).map((p) => get(p)));
    const seen = (o: KubeObject, i: number) =>
      history[keys[i]]?.at(-1)?.metadata.resourceVersion === o.metadata.resourceVersion;
    return live.every(seen) || undefined;
  });
  for (const key of keys) {
    const versions = history[key] ?? [];
    const kind = key.split('/')[0] as 'MasterKey' | 'DataKey';
    expect(versions.length).toBeGreaterThan(1);
    expect(versions[0].status).toBeUndefined();
    expect(argoHealth(kind, versions[0]).status).toBe('Progressing');
    const last = versions[versions.length - 1];
    const ready = last.status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready?.status).toBe('True');
    expect(argoHealth(kind, last)).toEqual({ status: 'Healthy', message: ready?.message });
  }
  // The MasterKey's finalizer is added before any status: still Progressing.
  const withFinalizerOnly = history['MasterKey/payments'].find(
    (v) => (v.metadata.finalizers ?? []).length > 0 && !v.status,
  );
  expect(withFinalizerOnly).toBeDefined();
  expect(argoHealth('MasterKey', withFinalizerOnly).status).toBe('Progressing');
});

test('a spec change not yet reconciled (server dry run of the patch) is Progressing', async () => {
  const r = await kubectlOk([
    'patch',
    'masterkey',
    'payments',
    '--type=merge',
    '-p',
    '{"spec":{"description":"changed in git"}}',
    '--dry-run=server',
    '-o',
    'json',
  ]);
  const patched = JSON.parse(r) as Versioned & { metadata: { generation: number } };
  expect(argoHealth('MasterKey', patched)).toEqual({
    status: 'Progressing',
    message: `Waiting for the operator to reconcile generation ${patched.metadata.generation}`,
  });
});

test('DataKey of a missing MasterKey: Degraded, naming the reason', async () => {
  const name = 'no-master';
  await applyObjects([dataKey(suite.ns, name, { masterKeyRef: { name: suite.mk('absent') } })]);
  await waitCondition(`${dataKeysPath(suite.ns)}/${name}`, 'False', 'MasterKeyNotFound');
  const health = argoHealth('DataKey', await get(`${dataKeysPath(suite.ns)}/${name}`));
  expect(health.status).toBe('Degraded');
  expect(health.message).toMatch(/^MasterKeyNotFound: MasterKey .* does not exist$/);
});

test('disabled MasterKey: Suspended; a DataKey of it: Degraded', async () => {
  const mk = suite.mk('off');
  await applyObjects([masterKey(mk, { enabled: false })]);
  await waitCondition(`${masterKeysPath}/${mk}`, 'True', 'KeyDisabled');
  expect(argoHealth('MasterKey', await get(`${masterKeysPath}/${mk}`)).status).toBe('Suspended');

  await applyObjects([dataKey(suite.ns, 'of-disabled', { masterKeyRef: { name: mk } })]);
  const p = `${dataKeysPath(suite.ns)}/of-disabled`;
  await waitCondition(p, 'False', 'MasterKeyDisabled');
  const health = argoHealth('DataKey', await get(p));
  expect(health).toEqual({
    status: 'Degraded',
    message: expect.stringMatching(/^MasterKeyDisabled: /),
  });
});

test('MasterKey with a conflicting alias: Degraded; a DataKey waiting for it: Progressing', async () => {
  const mk = suite.mk('clash');
  await applyObjects([masterKey(mk, { aliases: ['alias/payments'] })]);
  await waitCondition(`${masterKeysPath}/${mk}`, 'False', 'AliasConflict');
  const mkHealth = argoHealth('MasterKey', await get(`${masterKeysPath}/${mk}`));
  expect(mkHealth).toEqual({
    status: 'Degraded',
    message: expect.stringMatching(/^AliasConflict: /),
  });

  await applyObjects([dataKey(suite.ns, 'waiting', { masterKeyRef: { name: mk } })]);
  const p = `${dataKeysPath(suite.ns)}/waiting`;
  await waitCondition(p, 'False', 'MasterKeyNotReady');
  expect(argoHealth('DataKey', await get(p)).status).toBe('Progressing');
});

test('the operator never writes spec: no field manager but kubectl owns a spec field', async () => {
  for (const p of examplePaths.slice(0, 3)) {
    const o = await get(p);
    const managers = (o.metadata as { managedFields?: { manager: string; fieldsV1?: Json }[] })
      .managedFields;
    const specOwners = (managers ?? [])
      .filter((m) => m.fieldsV1 && 'f:spec' in m.fieldsV1)
      .map((m) => m.manager);
    expect({ p, specOwners }).toEqual({ p, specOwners: ['kubectl'] });
  }
});

test('kubectl apply --server-side -f examples/ again changes nothing; kubectl diff exits 0', async () => {
  const before = await Promise.all(examplePaths.map((p) => get(p)));
  await kubectlOk(['apply', '--server-side', '-f', EXAMPLES]);
  const after = await Promise.all(examplePaths.map((p) => get(p)));
  const versionsOf = (objects: KubeObject[]) =>
    objects.map((o) => `${o.kind}/${o.metadata.name}@${o.metadata.resourceVersion}`);
  expect(versionsOf(after)).toEqual(versionsOf(before));
  const diff = await kubectl(['diff', '--server-side', '-f', EXAMPLES]);
  expect(diff).toEqual({ code: 0, stdout: '', stderr: '' });
});

type Json = Record<string, unknown>;

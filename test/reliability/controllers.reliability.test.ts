// The controllers' promises that had no test: the DataKey controller's reissue
// path (no stored copy opens: one new data key, announced), its retries with
// backoff on KMS errors (never answered with a new key), MasterKey alias
// changes on the success path, MasterKey finalization (aliases released,
// deletion scheduled with its window, the Event), a key-store write the API
// server refuses (nothing used before it is saved, the retry succeeds), and two
// creators of a DataKey's first Secret (one wins, the other adopts its key).
import type RPCClient from '@alicloud/pop-core';
import {
  boundContext,
  secretManifest,
  type DataKeyObject as StoredDataKey,
} from '../../src/datakey';
import type { KubeObject } from '../../src/runtime/kube-client';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  dataKeysPath,
  decryptSecret,
  eventsFor,
  generationsOf,
  getOrUndefined,
  kmsClient,
  masterKey,
  masterKeysPath,
  readyOf,
  secretsPath,
  useOperatorSuite,
  waitCondition,
  type DataKeyObject,
  type SecretObject,
} from '../helpers/operator-suite';
import { recordFigures } from '../helpers/reliability-figures';
import { eventually } from '../helpers/wait';

type MasterKeyObject = KubeObject & { status?: { keyId?: string } };
interface GenerationStatus {
  currentGeneration?: number;
  ciphertextBlob?: string;
  generations?: { generation: number; ciphertextBlob: string }[];
}

const suite = useOperatorSuite('controllers');
const MK = suite.mk('main');
const DAY_MS = 86_400_000;
let op: OperatorProcess;
let kms: RPCClient;

const dkPath = (name: string) => `${dataKeysPath(suite.ns)}/${name}`;
const secretPath = (name: string) => `${secretsPath(suite.ns)}/${name}`;
const statusOf = (dk: DataKeyObject) => (dk.status ?? {}) as GenerationStatus;

async function startOperator(): Promise<void> {
  op = await suite.start();
  kms = kmsClient(op);
}

const call = <T>(action: string, params: Record<string, unknown>) =>
  kms.request<T>(action, params, { method: 'POST' });

/** The key an alias names in the core, or the KMS error code. */
async function aliasTarget(alias: string): Promise<string> {
  try {
    return (await call<{ KeyMetadata: { KeyId: string } }>('DescribeKey', { KeyId: alias }))
      .KeyMetadata.KeyId;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

async function readyMasterKey(name: string, spec: Record<string, unknown> = {}): Promise<string> {
  expect((await applyObjects([masterKey(name, spec)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${name}`, 'True');
  return (await client.get<MasterKeyObject>(`${masterKeysPath}/${name}`)).status?.keyId as string;
}

async function readyDataKey(name: string, masterKeyName = MK): Promise<SecretObject> {
  expect(
    (await applyObjects([dataKey(suite.ns, name, { masterKeyRef: { name: masterKeyName } })])).code,
  ).toBe(0);
  await waitCondition(dkPath(name), 'True');
  return client.get<SecretObject>(secretPath(name));
}

/** The sum of a counter's samples whose labels contain `labels`. */
async function counter(name: string, labels: string): Promise<number> {
  return (await op.metrics())
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) && l.includes(labels))
    .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
}

/** Makes the DataKey controller reconcile `name` and waits until a reconcile has run since. */
async function reconcileAgain(name: string, value: string): Promise<void> {
  const before = await counter('datakey_reconcile_total', 'controller="datakey"');
  await client.mergePatch(dkPath(name), {
    metadata: { annotations: { 'test.datakey.io/touched': value } },
  });
  await eventually(`a reconcile of ${name}`, 30_000, async () =>
    (await counter('datakey_reconcile_total', 'controller="datakey"')) > before ? true : undefined,
  );
}

/** The same blob with its last byte flipped: it still parses, but never opens (AES-GCM). */
function spoiled(blobBase64: string): string {
  const blob = Buffer.from(blobBase64, 'base64');
  blob[blob.length - 1] ^= 0x01;
  return blob.toString('base64');
}

beforeAll(async () => {
  await startOperator();
  await readyMasterKey(MK);
});

test('no stored copy opens: one new data key as the next generation, a DataKeyReissued warning, then it settles', async () => {
  const name = 'reissued';
  await readyDataKey(name);
  const before = statusOf(await client.get<DataKeyObject>(dkPath(name)));
  expect(before.currentGeneration).toBe(1);
  // Both copies spoiled while no operator runs: the Secret gone, the status copy not opening.
  await op.stop();
  await client.delete(secretPath(name));
  await client.mergePatch(`${dkPath(name)}/status`, {
    status: {
      ciphertextBlob: spoiled(before.ciphertextBlob as string),
      generations: (before.generations ?? []).map((g) => ({
        ...g,
        ciphertextBlob: spoiled(g.ciphertextBlob),
      })),
    },
  });
  await startOperator();

  const reissued = await eventually('generation 2 Ready, in its Secret', 60_000, async () => {
    const dk = await client.get<DataKeyObject>(dkPath(name));
    const secret = await getOrUndefined<SecretObject>(secretPath(name));
    return readyOf(dk)?.status === 'True' && statusOf(dk).currentGeneration === 2 && secret
      ? { dk, secret }
      : undefined;
  });
  // The spoiled generation opens nowhere, so it is not kept: only the new one.
  expect(generationsOf(reissued.secret).map((g) => g.generation)).toEqual([2]);
  expect((await decryptSecret(op, reissued.secret)).length).toBe(32);
  const events = await eventually('the DataKeyReissued event', 15_000, async () => {
    const e = await eventsFor(suite.ns, name, 'DataKeyReissued');
    return e.length > 0 ? e : undefined;
  });
  expect(events.map((e) => [e.type, e.count ?? 1])).toEqual([['Warning', 1]]);

  // Settled: a later reconcile finds generation 2 intact and issues nothing more.
  await reconcileAgain(name, 'after-reissue');
  const later = await client.get<DataKeyObject>(dkPath(name));
  expect(statusOf(later).currentGeneration).toBe(2);
  expect(statusOf(later).ciphertextBlob).toBe(statusOf(reissued.dk).ciphertextBlob);
  expect((await eventsFor(suite.ns, name, 'DataKeyReissued')).map((e) => e.count ?? 1)).toEqual([
    1,
  ]);
});

test('a KMS error is retried with backoff, never answered with a new key; once the key is enabled again, Ready with the same ciphertext', async () => {
  // A master key of its own: nothing else fails on it meanwhile.
  const keyId = await readyMasterKey(suite.mk('backoff'));
  const name = 'patient';
  const secret = await readyDataKey(name, suite.mk('backoff'));
  const failures = () => counter('datakey_kms_calls_total', 'code="Rejected.Disabled"');
  const before = await failures();
  // Disabled behind the operator's back (the MasterKey still says enabled): every open fails.
  await call('DisableKey', { KeyId: keyId });
  try {
    // Every attempt fails after this moment, and one open (one failed call) each.
    const start = Date.now();
    await reconcileAgain(name, 'while-disabled');
    const condition = await waitCondition(dkPath(name), 'False', 'KMSError');
    expect(condition.message).toContain('Rejected.Disabled');
    const sixth = await eventually(
      'six failed attempts',
      60_000,
      async () => ((await failures()) >= before + 6 ? Date.now() : undefined),
      100,
    );
    // Backing off from 200 ms (doubling, -20 % jitter at the least), the sixth attempt
    // comes 4.6 s or more after the first; a hot loop would make six within milliseconds.
    expect(sixth - start).toBeGreaterThan(4_000);
    expect(await eventsFor(suite.ns, name, 'DataKeyReissued')).toEqual([]);
  } finally {
    await call('EnableKey', { KeyId: keyId });
  }
  // The retries go on by themselves: Ready again once the key opens, with the same data key.
  await waitCondition(dkPath(name), 'True', undefined, 90_000);
  expect((await client.get<SecretObject>(secretPath(name))).data).toEqual(secret.data);
  expect(await eventsFor(suite.ns, name, 'DataKeyReissued')).toEqual([]);
});

const alias = (n: string) => `alias/${suite.id}-${n}`;

test('MasterKey aliases follow the spec: an added alias names its key, a removed one is released', async () => {
  const name = suite.mk('aliased');
  const keyId = await readyMasterKey(name, { aliases: [alias('a'), alias('b')] });
  expect(await aliasTarget(alias('a'))).toBe(keyId);
  expect(await aliasTarget(alias('b'))).toBe(keyId);
  await client.mergePatch(`${masterKeysPath}/${name}`, {
    spec: { aliases: [alias('b'), alias('c')] },
  });
  await eventually('alias c added', 30_000, async () =>
    (await aliasTarget(alias('c'))) === keyId ? true : undefined,
  );
  expect(await aliasTarget(alias('a'))).toBe('Forbidden.AliasNotFound');
  expect(await aliasTarget(alias('b'))).toBe(keyId);
  // The released alias is free for another key.
  const other = await readyMasterKey(suite.mk('taker'), { aliases: [alias('a')] });
  expect(await aliasTarget(alias('a'))).toBe(other);
});

test('deleting a MasterKey releases its aliases, schedules its key’s deletion with the 7-day window and says so in an Event', async () => {
  const name = suite.mk('aliased');
  const keyId = (await client.get<MasterKeyObject>(`${masterKeysPath}/${name}`)).status
    ?.keyId as string;
  const deletedAt = Date.now();
  await client.delete(`${masterKeysPath}/${name}`);
  await eventually('the MasterKey gone (finalizer released)', 30_000, async () =>
    (await getOrUndefined(`${masterKeysPath}/${name}`)) ? undefined : true,
  );
  const meta = (
    await call<{ KeyMetadata: { KeyState: string; DeleteDate: string } }>('DescribeKey', {
      KeyId: keyId,
    })
  ).KeyMetadata;
  expect(meta.KeyState).toBe('PendingDeletion');
  const deleteDate = Date.parse(meta.DeleteDate);
  expect(deleteDate).toBeGreaterThanOrEqual(deletedAt + 7 * DAY_MS - 2_000);
  expect(deleteDate).toBeLessThanOrEqual(Date.now() + 7 * DAY_MS + 2_000);
  expect(await aliasTarget(alias('b'))).toBe('Forbidden.AliasNotFound');
  expect(await aliasTarget(alias('c'))).toBe('Forbidden.AliasNotFound');
  // Events of cluster-scoped objects are kept in the default namespace.
  const events = await eventually('the KeyDeletionScheduled event', 15_000, async () => {
    const e = await eventsFor('default', name, 'KeyDeletionScheduled');
    return e.length > 0 ? e : undefined;
  });
  expect(events.map((e) => [e.type, e.message])).toEqual([
    ['Normal', `Key ${keyId} is scheduled for deletion in 7 days`],
  ]);
  // A MasterKey made afterwards may take the released alias.
  const heir = await readyMasterKey(suite.mk('heir'), { aliases: [alias('b')] });
  expect(await aliasTarget(alias('b'))).toBe(heir);
});

const policies = '/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies';
const bindings = '/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings';
let probes = 0;

interface SecretWriteRule {
  /** Unique name of the policy and its binding. */
  name: string;
  namespace: string;
  /** CEL over the Secret written: false refuses the CREATE or UPDATE. */
  expression: string;
  /** Metadata of a Secret the rule refuses: written to see whether the rule is in force. */
  probe: (n: number) => Record<string, unknown>;
}

/** Whether the API server refuses the rule's probe Secret now (one it accepts is deleted again). */
async function refusesProbe(rule: SecretWriteRule): Promise<boolean> {
  try {
    const probe = await client.create<SecretObject>(secretsPath(rule.namespace), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: rule.probe(probes++),
    });
    await client.delete(`${secretsPath(rule.namespace)}/${probe.metadata.name}`);
    return false;
  } catch (err) {
    if ((err as Error).message.includes(`refused by ${rule.name}`)) return true;
    throw err;
  }
}

/**
 * While `run` runs, a ValidatingAdmissionPolicy of the real API server refuses
 * the Secret writes in the rule's namespace that fail its expression.
 */
async function withSecretWritesRefused(
  rule: SecretWriteRule,
  run: () => Promise<void>,
): Promise<void> {
  await client.create(policies, {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicy',
    metadata: { name: rule.name },
    spec: {
      failurePolicy: 'Fail',
      matchConstraints: {
        resourceRules: [
          {
            apiGroups: [''],
            apiVersions: ['v1'],
            operations: ['CREATE', 'UPDATE'],
            resources: ['secrets'],
          },
        ],
      },
      validations: [{ expression: rule.expression, message: `refused by ${rule.name}` }],
    },
  });
  await client.create(bindings, {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicyBinding',
    metadata: { name: rule.name },
    spec: {
      policyName: rule.name,
      validationActions: ['Deny'],
      matchResources: {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': rule.namespace } },
      },
    },
  });
  try {
    await eventually(`${rule.name} in force`, 30_000, async () =>
      (await refusesProbe(rule)) ? true : undefined,
    );
    await run();
  } finally {
    await client.delete(`${bindings}/${rule.name}`);
    await client.delete(`${policies}/${rule.name}`);
    await eventually(`${rule.name} lifted`, 30_000, async () =>
      (await refusesProbe(rule)) ? undefined : true,
    );
  }
}

const STORE_LABEL = 'kms.datakey.io/store';

test('a key-store write the API server refuses: the rotation shows nowhere; once writes pass, it happens exactly once', async () => {
  const name = suite.mk('unsaved');
  const keyId = await readyMasterKey(name);
  const secret = await readyDataKey('unsaved', name);
  const plaintext = await decryptSecret(op, secret);
  const mkPath = `${masterKeysPath}/${name}`;
  type Rotated = MasterKeyObject & { status: { primaryKeyVersion: string } };
  const initial = (await client.get<Rotated>(mkPath)).status.primaryKeyVersion;
  const versionCount = async () =>
    (await call<{ TotalCount: number }>('ListKeyVersions', { KeyId: keyId, PageSize: 1 }))
      .TotalCount;

  const keyStoreFrozen: SecretWriteRule = {
    name: `${suite.id}-key-store-frozen`,
    namespace: suite.operatorNs,
    expression: `!has(object.metadata.labels) || !('${STORE_LABEL}' in object.metadata.labels)`,
    // A record kind the key store ignores.
    probe: (n) => ({ name: `probe-${n}`, labels: { [STORE_LABEL]: 'probe' } }),
  };
  await withSecretWritesRefused(keyStoreFrozen, async () => {
    const failed = await counter(
      'datakey_reconcile_total',
      'controller="masterkey",result="error"',
    );
    await client.mergePatch(mkPath, {
      metadata: { annotations: { 'kms.datakey.io/rotate': 'while-frozen' } },
    });
    await eventually(
      'two failed rotations (the store refused the new version)',
      30_000,
      async () =>
        (await counter('datakey_reconcile_total', 'controller="masterkey",result="error"')) >=
        failed + 2
          ? true
          : undefined,
    );
    // Not saved, so not used: the core, the MasterKey and the DataKey still show the one version.
    expect(await versionCount()).toBe(1);
    expect((await client.get<Rotated>(mkPath)).status.primaryKeyVersion).toBe(initial);
    expect((await client.get<SecretObject>(secretPath('unsaved'))).data).toEqual(secret.data);
  });

  const rotated = await eventually('the rotation saved and reported', 60_000, async () => {
    const v = (await client.get<Rotated>(mkPath)).status.primaryKeyVersion;
    return v !== initial ? v : undefined;
  });
  expect(await versionCount()).toBe(2);
  const rewrapped = await eventually('the DataKey re-wrapped to it', 60_000, async () => {
    const s = await client.get<SecretObject>(secretPath('unsaved'));
    return Buffer.from(s.data?.keyVersionId ?? '', 'base64').toString() === rotated ? s : undefined;
  });
  expect((await decryptSecret(op, rewrapped)).equals(plaintext)).toBe(true);
});

test('two creators of the first data key: the Secret create that wins keeps its key, the other creator adopts it; nothing replaced, nothing announced twice', async () => {
  const name = 'raced';
  const rival = 'test.datakey.io/rival';
  const keyId = (await client.get<MasterKeyObject>(`${masterKeysPath}/${MK}`)).status
    ?.keyId as string;
  const generated = () =>
    counter('datakey_kms_calls_total', 'operation="GenerateDataKeyWithoutPlaintext",code="OK"');
  let rivalBlob = '';
  // The operator's create of the Secret is refused until the rival's is in.
  const rivalFirst: SecretWriteRule = {
    name: `${suite.id}-rival-first`,
    namespace: suite.ns,
    expression: `!object.metadata.name.startsWith('${name}') || (has(object.metadata.annotations) && '${rival}' in object.metadata.annotations)`,
    probe: (n) => ({ name: `${name}-probe-${n}` }),
  };
  await withSecretWritesRefused(rivalFirst, async () => {
    const before = await generated();
    expect(
      (await applyObjects([dataKey(suite.ns, name, { masterKeyRef: { name: MK } })])).code,
    ).toBe(0);
    // The operator generated a data key of its own; its Secret create was refused.
    await eventually('the operator’s own data key generated', 30_000, async () =>
      (await generated()) > before ? true : undefined,
    );
    const dk = await client.get<StoredDataKey>(dkPath(name));
    const sealed = await call<{ CiphertextBlob: string; KeyVersionId: string }>(
      'GenerateDataKeyWithoutPlaintext',
      { KeyId: keyId, EncryptionContext: JSON.stringify(boundContext(dk)) },
    );
    rivalBlob = sealed.CiphertextBlob;
    const manifest = secretManifest(dk, [
      {
        keyId,
        keyVersionId: sealed.KeyVersionId,
        flow: 'Standard',
        ciphertextBlob: Buffer.from(sealed.CiphertextBlob, 'base64'),
        generation: 1,
        creationTime: new Date().toISOString(),
      },
    ]);
    await client.create(secretsPath(suite.ns), {
      ...manifest,
      metadata: { ...manifest.metadata, annotations: { [rival]: 'first' } },
    });
  });
  await waitCondition(dkPath(name), 'True');
  const dk = await client.get<DataKeyObject>(dkPath(name));
  const secret = await client.get<SecretObject>(secretPath(name));
  expect(statusOf(dk).ciphertextBlob).toBe(rivalBlob);
  expect(generationsOf(secret).map((g) => [g.generation, g.ciphertextBlob])).toEqual([
    [1, rivalBlob],
  ]);
  expect((await decryptSecret(op, secret)).length).toBe(32);
  // The operator's own key was never stored, so never announced; nothing was reissued.
  expect(await eventsFor(suite.ns, name, 'Generated')).toEqual([]);
  expect(await eventsFor(suite.ns, name, 'DataKeyReissued')).toEqual([]);
});

test('across this file: the operator alive and Ready', async () => {
  recordFigures({ fault: 'controllers', crashes: op.alive() ? 0 : 1 });
  expect(op.alive()).toBe(true);
  expect((await op.readyz()).status).toBe(200);
});

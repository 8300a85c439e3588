// Rotation: the rotate annotation and automatic rotation move every DataKey of
// the master key to its new primary version in the Advance flow, keeping the same
// data key; interrupted re-wraps resume; a second rotation converges on the newest.
import type { OperatorProcess } from '../helpers/operator-process';
import {
  CRDS,
  applyObjects,
  applyShortRotationCrds,
  client,
  dataKey,
  decode,
  decryptSecret,
  kubectlOk,
  leakScanTests,
  listDataKeys,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitAllReady,
  waitCondition,
  type Json,
  type SecretObject,
} from '../helpers/operator-suite';
import type { KubeObject } from '../../src/runtime/kube-client';
import { eventually, sleep } from '../helpers/wait';

type MasterKeyObject = KubeObject & {
  status?: {
    primaryKeyVersion?: string;
    keyVersions?: { keyVersionId: string; creationDate: string }[];
    rotation?: { rewrapped: number; total: number };
    rotateAnnotationSeen?: string;
    conditions?: { type: string; status: string; reason: string }[];
  };
};

const suite = useOperatorSuite('rotation');
let op: OperatorProcess;
let lastSecret: SecretObject | undefined;

const getMasterKey = (name: string) => client.get<MasterKeyObject>(`${masterKeysPath}/${name}`);
const getSecret = async (name: string) => {
  lastSecret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${name}`);
  return lastSecret;
};
const annotateRotate = (name: string, value: string) =>
  client.mergePatch(`${masterKeysPath}/${name}`, {
    metadata: { annotations: { 'kms.datakey.io/rotate': value } },
  });

/** The data keys (plaintexts, via the KMS API) of the named DataKeys' Secrets. */
async function plaintextsOf(names: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of names)
    out.set(name, (await decryptSecret(op, await getSecret(name))).toString('hex'));
  return out;
}

/**
 * Waits until every named DataKey is on `version` in the Advance flow, in its
 * status and in its Secret (the status copy is written first, the Secret after).
 */
async function waitAllOn(names: string[], version: string, timeoutMs: number) {
  const wanted = new Set(names);
  await eventually(`${names.length} DataKeys and Secrets on ${version}`, timeoutMs, async () => {
    const mine = (await listDataKeys(suite.ns)).filter((d) => wanted.has(d.metadata.name));
    const done = mine.filter(
      (d) => d.status?.keyVersionId === version && d.status?.flow === 'Advance',
    );
    if (done.length !== names.length) return undefined;
    const secrets = await client.list<SecretObject>(secretsPath(suite.ns), {
      labelSelector: 'kms.datakey.io/datakey',
    });
    const onVersion = secrets.items.filter(
      (s) => wanted.has(s.metadata.name) && decode(s.data?.keyVersionId) === version,
    );
    return onVersion.length === names.length ? true : undefined;
  });
}

beforeAll(async () => {
  // The test-only CRD variant allows rotation intervals under 7 days.
  await applyShortRotationCrds();
  op = await suite.start({ args: ['--min-rotation-interval', '1s', '--rewrap-rate', '40'] });
});
afterAll(async () => {
  await kubectlOk(['apply', '-f', CRDS]);
});

test('the rotate annotation re-wraps every DataKey of that key to the new primary, same data key; others untouched', async () => {
  const rotated = suite.mk('manual');
  const other = suite.mk('other');
  expect((await applyObjects([masterKey(rotated), masterKey(other)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${rotated}`, 'True');
  await waitCondition(`${masterKeysPath}/${other}`, 'True');
  const mine = Array.from({ length: 12 }, (_, i) => `manual-${i}`);
  const theirs = ['bystander-0', 'bystander-1'];
  await applyObjects([
    ...mine.map((n) =>
      dataKey(suite.ns, n, { masterKeyRef: { name: rotated }, encryptionContext: { app: n } }),
    ),
    ...theirs.map((n) => dataKey(suite.ns, n, { masterKeyRef: { name: other } })),
  ]);
  await waitAllReady(suite.ns, mine.length + theirs.length, 60_000);
  const before = await plaintextsOf([...mine, ...theirs]);
  const theirBlobs = await Promise.all(
    theirs.map(async (n) => (await getSecret(n)).data?.ciphertextBlob),
  );
  const initial = (await getMasterKey(rotated)).status?.primaryKeyVersion as string;

  await annotateRotate(rotated, 'r1');
  const primary = await eventually('a new primary version', 20_000, async () => {
    const v = (await getMasterKey(rotated)).status?.primaryKeyVersion;
    return v && v !== initial ? v : undefined;
  });
  await waitAllOn(mine, primary, 60_000);

  for (const name of mine) {
    const secret = await getSecret(name);
    expect(Object.keys(secret.data ?? {}).sort()).toEqual([
      'aad',
      'algorithm',
      'ciphertextBlob',
      'flow',
      'generation',
      'generations',
      'iv',
      'keyId',
      'keyVersionId',
    ]);
    expect(decode(secret.data?.keyVersionId)).toBe(primary);
    expect(decode(secret.data?.algorithm)).toBe('AES_GCM');
  }
  const after = await plaintextsOf(mine);
  for (const name of mine) expect(after.get(name)).toBe(before.get(name));

  // DataKeys of the other master key: not a byte changed.
  for (const [i, name] of theirs.entries()) {
    const secret = await getSecret(name);
    expect(secret.data?.ciphertextBlob).toBe(theirBlobs[i]);
    expect(decode(secret.data?.flow)).toBe('Standard');
  }

  const mk = await eventually('rotation complete in status', 20_000, async () => {
    const m = await getMasterKey(rotated);
    const rotating = m.status?.conditions?.find((c) => c.type === 'Rotating');
    return rotating?.status === 'False' && m.status?.rotation?.rewrapped === mine.length
      ? m
      : undefined;
  });
  expect(mk.status?.rotation).toEqual({ rewrapped: mine.length, total: mine.length });
  expect(mk.status?.rotateAnnotationSeen).toBe('r1');
  expect(mk.status?.keyVersions).toHaveLength(2);

  // The same value again (e.g. a re-apply) never rotates twice.
  await client.mergePatch(`${masterKeysPath}/${rotated}`, {
    metadata: { labels: { touched: 'yes' } },
  });
  await sleep(2000);
  expect((await getMasterKey(rotated)).status?.keyVersions).toHaveLength(2);

  // New DataKeys of a rotated key start in the Advance flow on the primary version.
  await applyObjects([dataKey(suite.ns, 'born-advance', { masterKeyRef: { name: rotated } })]);
  await waitAllOn(['born-advance'], primary, 30_000);
  await decryptSecret(op, await getSecret('born-advance'));
});

test('automatic rotation happens on schedule, once per interval, and DataKeys follow', async () => {
  const name = suite.mk('auto');
  expect(
    (await applyObjects([masterKey(name, { rotation: { automatic: true, interval: '8s' } })])).code,
  ).toBe(0);
  await waitCondition(`${masterKeysPath}/${name}`, 'True');
  await applyObjects([dataKey(suite.ns, 'auto-0', { masterKeyRef: { name } })]);
  await waitAllReady(suite.ns, (await listDataKeys(suite.ns)).length, 30_000);

  const mk = await eventually('two scheduled rotations', 45_000, async () => {
    const m = await getMasterKey(name);
    return (m.status?.keyVersions?.length ?? 0) >= 3 ? m : undefined;
  });
  const created = (mk.status?.keyVersions ?? []).map((v) => Date.parse(v.creationDate));
  for (let i = 1; i < created.length; i++) {
    // Once per interval: never two rotations within one 8 s interval (dates have 1 s precision).
    expect(created[i] - created[i - 1]).toBeGreaterThanOrEqual(7000);
  }
  await waitAllOn(['auto-0'], mk.status?.primaryKeyVersion as string, 30_000);
  // Turn it off so the key stops rotating for the rest of the suite.
  await applyObjects([masterKey(name, { rotation: { automatic: false, interval: '8s' } })]);
});

test('kill -9 half-way through re-wrapping 300 DataKeys, then a second rotation: all end on the newest primary, same keys', async () => {
  const name = suite.mk('bulk');
  expect((await applyObjects([masterKey(name)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${name}`, 'True');
  const names = Array.from({ length: 300 }, (_, i) => `bulk-${i}`);
  await applyObjects(names.map((n) => dataKey(suite.ns, n, { masterKeyRef: { name } })));
  await eventually('300 bulk DataKeys Ready', 120_000, async () => {
    const ready = (await listDataKeys(suite.ns)).filter(
      (d) => d.metadata.name.startsWith('bulk-') && d.status?.flow === 'Standard',
    );
    return ready.length === names.length ? true : undefined;
  });
  const before = await plaintextsOf(names);
  const initial = (await getMasterKey(name)).status?.primaryKeyVersion as string;

  await annotateRotate(name, 'first');
  const firstPrimary = await eventually('first rotation', 20_000, async () => {
    const v = (await getMasterKey(name)).status?.primaryKeyVersion;
    return v && v !== initial ? v : undefined;
  });
  // At 40 re-wraps a second this takes ~7 s: stop the operator hard in the middle.
  const moved = await eventually('some re-wrapped', 30_000, async () => {
    const n = (await listDataKeys(suite.ns)).filter(
      (d) => d.status?.keyVersionId === firstPrimary,
    ).length;
    return n >= 60 ? n : undefined;
  });
  await op.kill9();
  expect(moved).toBeLessThan(names.length);

  op = await suite.start({ args: ['--min-rotation-interval', '1s', '--rewrap-rate', '40'] });
  await sleep(1500);
  // A second rotation while the first is still running.
  await annotateRotate(name, 'second');
  const secondPrimary = await eventually('second rotation', 30_000, async () => {
    const v = (await getMasterKey(name)).status?.primaryKeyVersion;
    return v && v !== firstPrimary ? v : undefined;
  });
  await waitAllOn(names, secondPrimary, 120_000);

  // Same data key in every Secret; no DataKey lost or left on an older version.
  const after = await plaintextsOf(names);
  for (const n of names) expect(after.get(n)).toBe(before.get(n));
  const bulk = (await listDataKeys(suite.ns)).filter((d) => d.metadata.name.startsWith('bulk-'));
  expect(bulk).toHaveLength(names.length);
  for (const dk of bulk) {
    const secret = await getSecret(dk.metadata.name);
    expect(decode(secret.data?.keyVersionId)).toBe(secondPrimary);
    expect((dk.status as Json | undefined)?.ciphertextBlob).toBe(
      decode(secret.data?.ciphertextBlob),
    );
  }
  const mk = await getMasterKey(name);
  expect(mk.status?.keyVersions).toHaveLength(3);
});

leakScanTests(suite, () => lastSecret);

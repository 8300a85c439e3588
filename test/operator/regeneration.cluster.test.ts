// Regeneration: the regenerate annotation and the interval make a fresh data key
// as a new generation, keeping `keepPrevious` before it; a master-key rotation
// re-wraps every kept generation; kill -9 mid regeneration and mid re-wrap loses
// and duplicates nothing; a deleted Secret comes back with every generation; a
// Secret of the first layout is rewritten to layout 2 with the same data key.
import { isDeepStrictEqual } from 'node:util';
import { createLogger } from '../../src/common/logger';
import { Informer } from '../../src/runtime/informer';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  CRDS,
  applyObjects,
  applyShortRotationCrds,
  client,
  dataKey,
  dataKeysPath,
  decode,
  decryptGenerations,
  decryptSecret,
  eventsFor,
  generationsOf,
  getOrUndefined,
  kubectlOk,
  leakScanTests,
  listDataKeys,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitCondition,
  type DataKeyObject,
  type Json,
  type SecretObject,
} from '../helpers/operator-suite';
import { eventually, sleep } from '../helpers/wait';
import type { KubeObject } from '../../src/runtime/kube-client';

const suite = useOperatorSuite('regeneration');
const MK = suite.mk('main');
const OPERATOR_ARGS = ['--min-rotation-interval', '1s', '--rewrap-rate', '40'];
const BURST = 120;
let op: OperatorProcess;
let lastSecret: SecretObject | undefined;

/** Every ciphertext ever seen per Secret and generation, from a watch over the whole run. */
const seenBlobs = new Map<string, Set<string>>();
const secrets = new Informer<SecretObject>(
  client,
  { path: secretsPath(suite.ns), labelSelector: 'kms.datakey.io/datakey' },
  createLogger('test-watch', { level: 'silent' }),
);
secrets.on((_event, secret) => {
  if (!secret.data?.generations) return;
  for (const g of generationsOf(secret)) {
    const key = `${secret.metadata.name}#${g.generation}`;
    seenBlobs.set(key, (seenBlobs.get(key) ?? new Set()).add(g.ciphertextBlob));
  }
});

const dkPath = (name: string) => `${dataKeysPath(suite.ns)}/${name}`;
const secretPath = (name: string) => `${secretsPath(suite.ns)}/${name}`;
const getDataKey = (name: string) => client.get<DataKeyObject>(dkPath(name));
const getSecret = async (name: string) => {
  lastSecret = await client.get<SecretObject>(secretPath(name));
  return lastSecret;
};
const annotate = (name: string, value: string) =>
  client.mergePatch(dkPath(name), {
    metadata: { annotations: { 'kms.datakey.io/regenerate': value } },
  });
const hex = (m: Map<number, Buffer>) => new Map([...m].map(([n, b]) => [n, b.toString('hex')]));

/**
 * Waits until the DataKey's status and its Secret both show generation `n` as
 * current, with the same generation entries, and returns both.
 */
async function waitGeneration(name: string, n: number, timeoutMs = 30_000) {
  return eventually(`${name} at generation ${n} in status and Secret`, timeoutMs, async () => {
    const dk = await getDataKey(name);
    const secret = await getOrUndefined<SecretObject>(secretPath(name));
    if (dk.status?.currentGeneration !== n || !secret?.data?.generations) return undefined;
    if (decode(secret.data.generation) !== String(n)) return undefined;
    const entries = generationsOf(secret);
    return isDeepStrictEqual(entries, dk.status.generations) ? { dk, secret, entries } : undefined;
  });
}

beforeAll(async () => {
  // The test-only CRD variant allows regeneration (and rotation) intervals under 7 days.
  await applyShortRotationCrds();
  secrets.start();
  await secrets.synced;
  op = await suite.start({ args: OPERATOR_ARGS });
  expect((await applyObjects([masterKey(MK)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${MK}`, 'True');
});
afterAll(async () => {
  secrets.stop();
  await kubectlOk(['apply', '-f', CRDS]);
});

test('the regenerate annotation makes one fresh data key per distinct value; earlier ones still open; keepPrevious respected', async () => {
  const name = 'annotated';
  await applyObjects([
    dataKey(suite.ns, name, { masterKeyRef: { name: MK }, regeneration: { keepPrevious: 2 } }),
  ]);
  const first = await waitGeneration(name, 1);
  expect(first.secret.metadata.labels?.['kms.datakey.io/layout']).toBe('2');
  const p1 = (await decryptSecret(op, first.secret)).toString('hex');

  await annotate(name, 't1');
  const second = await waitGeneration(name, 2);
  const p2 = (await decryptSecret(op, second.secret)).toString('hex');
  expect(p2).not.toBe(p1);
  expect(hex(await decryptGenerations(op, second.secret))).toEqual(
    new Map([
      [1, p1],
      [2, p2],
    ]),
  );
  expect(second.dk.status?.regenerateTokensSeen).toEqual(['t1']);
  expect(second.dk.status?.lastRegenerationTime).toBe(second.entries[1].creationTime);

  // The same value again (a re-apply, another edit) never regenerates twice.
  await client.mergePatch(dkPath(name), { metadata: { labels: { touched: 'yes' } } });
  await sleep(2000);
  expect((await getDataKey(name)).status?.currentGeneration).toBe(2);

  await annotate(name, 't2');
  await waitGeneration(name, 3);
  await annotate(name, 't3');
  const fourth = await waitGeneration(name, 4);
  // keepPrevious 2: generations 2, 3 and 4; generation 1 dropped from both copies.
  expect(fourth.entries.map((e) => e.generation)).toEqual([2, 3, 4]);
  const opened = hex(await decryptGenerations(op, fourth.secret));
  expect(opened.get(2)).toBe(p2);
  expect(new Set(opened.values()).size).toBe(3);
  expect(opened.get(4)).toBe((await decryptSecret(op, fourth.secret)).toString('hex'));

  // A value acted on before, set back, does not regenerate (even one whose generation was dropped).
  await annotate(name, 't1');
  await sleep(2000);
  const after = await getDataKey(name);
  expect(after.status?.currentGeneration).toBe(4);
  expect(after.status?.regenerateTokensSeen).toEqual(['t1', 't2', 't3']);
  const events = await eventsFor(suite.ns, name, 'Regenerated');
  expect(events.reduce((n, e) => n + ((e.count as number | undefined) ?? 1), 0)).toBe(3);
});

test('the regeneration interval makes a new generation once per interval; removing it stops them', async () => {
  const name = 'scheduled';
  await applyObjects([
    dataKey(suite.ns, name, {
      masterKeyRef: { name: MK },
      regeneration: { interval: '4s', keepPrevious: 1 },
    }),
  ]);
  await waitGeneration(name, 1);
  const third = await eventually('generation 3 or later in status and Secret', 30_000, async () => {
    const dk = await getDataKey(name);
    const n = dk.status?.currentGeneration ?? 0;
    return n >= 3 ? waitGeneration(name, n, 3000).catch(() => undefined) : undefined;
  });
  const current = third.dk.status?.currentGeneration as number;
  expect(third.entries.map((e) => e.generation)).toEqual([current - 1, current]);
  const [g2, g3] = third.entries.map((e) => Date.parse(e.creationTime));
  expect(g3 - g2).toBeGreaterThanOrEqual(4000);
  expect(Date.parse(third.dk.status?.nextRegenerationTime as string)).toBe(g3 + 4000);
  const opened = hex(await decryptGenerations(op, third.secret));
  expect(new Set(opened.values()).size).toBe(2);

  // The regeneration is the one mutable part of the spec: remove the interval.
  await applyObjects([dataKey(suite.ns, name, { masterKeyRef: { name: MK } })]);
  const stopped = await eventually('nextRegenerationTime cleared', 15_000, async () => {
    const dk = await getDataKey(name);
    return dk.status?.nextRegenerationTime === undefined ? dk : undefined;
  });
  await sleep(5000);
  expect((await getDataKey(name)).status?.currentGeneration).toBe(
    stopped.status?.currentGeneration,
  );
});

test('a deleted Secret comes back with every kept generation', async () => {
  const name = 'annotated';
  const before = await getSecret(name);
  const plaintexts = hex(await decryptGenerations(op, before));
  await client.delete(secretPath(name));
  const restored = await eventually('Secret restored', 30_000, async () => {
    const s = await getOrUndefined<SecretObject>(secretPath(name));
    return s && s.metadata.uid !== before.metadata.uid && s.data?.generations ? s : undefined;
  });
  expect(restored.data).toEqual(before.data);
  expect(generationsOf(restored).map((e) => e.generation)).toEqual([2, 3, 4]);
  expect(hex(await decryptGenerations(op, restored))).toEqual(plaintexts);
  await eventually('a SecretRestored event', 15_000, async () =>
    (await eventsFor(suite.ns, name, 'SecretRestored')).length > 0 ? true : undefined,
  );
});

test('a master-key rotation re-wraps all three kept generations; each still opens to its own key', async () => {
  const name = 'annotated'; // generations 2, 3, 4
  const before = hex(await decryptGenerations(op, await getSecret(name)));
  expect(before.size).toBe(3);
  const initial = (await client.get<KubeObject & Json>(`${masterKeysPath}/${MK}`)) as Json;
  const initialPrimary = (initial.status as Json).primaryKeyVersion as string;
  await client.mergePatch(`${masterKeysPath}/${MK}`, {
    metadata: { annotations: { 'kms.datakey.io/rotate': 'r1' } },
  });
  const { secret, entries } = await eventually('every generation re-wrapped', 60_000, async () => {
    const mk = (await client.get<KubeObject & Json>(`${masterKeysPath}/${MK}`)) as Json;
    const primary = (mk.status as Json).primaryKeyVersion as string;
    if (primary === initialPrimary) return undefined;
    const s = await getSecret(name);
    const es = generationsOf(s);
    return es.every((e) => e.keyVersionId === primary && e.flow === 'Advance')
      ? { secret: s, entries: es }
      : undefined;
  });
  expect(entries.map((e) => e.generation)).toEqual([2, 3, 4]);
  expect(decode(secret.data?.flow)).toBe('Advance');
  expect(hex(await decryptGenerations(op, secret))).toEqual(before);
  expect((await getDataKey(name)).status?.generations).toEqual(entries);
});

test('kill -9 during regenerations: exactly one new generation per DataKey and token, none lost', async () => {
  const names = Array.from({ length: BURST }, (_, i) => `burst-${i}`);
  await applyObjects(names.map((n) => dataKey(suite.ns, n, { masterKeyRef: { name: MK } })));
  await eventually(`${BURST} DataKeys at generation 1`, 120_000, async () => {
    const dks = (await listDataKeys(suite.ns)).filter((d) => d.metadata.name.startsWith('burst-'));
    return dks.filter((d) => d.status?.currentGeneration === 1).length === names.length
      ? true
      : undefined;
  });
  const before = new Map<string, string>();
  for (const n of names)
    before.set(n, (await decryptSecret(op, await getSecret(n))).toString('hex'));

  const regenerated = () =>
    names.filter((n) => decode(secrets.get(`${suite.ns}/${n}`)?.data?.generation) === '2').length;
  // All annotated at once; the operator is killed as soon as the watch sees the first ones done.
  const annotated = Promise.all(names.map((n) => annotate(n, 'k1')));
  const moved = await eventually(
    'some regenerated',
    30_000,
    async () => (regenerated() >= 3 ? regenerated() : undefined),
    20,
  );
  await op.kill9();
  await annotated;
  expect(moved).toBeLessThan(names.length);
  op = await suite.start({ args: OPERATOR_ARGS });
  for (const n of names) await waitGeneration(n, 2, 60_000);

  for (const n of names) {
    const secret = await getSecret(n);
    expect(generationsOf(secret).map((e) => e.generation)).toEqual([1, 2]);
    const opened = hex(await decryptGenerations(op, secret));
    expect(opened.get(1)).toBe(before.get(n));
    expect(opened.get(2)).not.toBe(before.get(n));
    // One ciphertext per generation ever written to the Secret (no second data key).
    expect(seenBlobs.get(`${n}#1`)?.size).toBe(1);
    expect(seenBlobs.get(`${n}#2`)?.size).toBe(1);
    expect(seenBlobs.has(`${n}#3`)).toBe(false);
  }
});

test('kill -9 during the re-wrap of kept generations: all end on the new primary, same keys', async () => {
  const names = Array.from({ length: BURST }, (_, i) => `burst-${i}`); // two generations each
  const before = new Map<string, Map<number, string>>();
  for (const n of names) before.set(n, hex(await decryptGenerations(op, await getSecret(n))));
  const mkBefore = (await client.get<KubeObject & Json>(`${masterKeysPath}/${MK}`)) as Json;
  const oldPrimary = (mkBefore.status as Json).primaryKeyVersion as string;
  await client.mergePatch(`${masterKeysPath}/${MK}`, {
    metadata: { annotations: { 'kms.datakey.io/rotate': 'r2' } },
  });
  const primary = await eventually('a new primary version', 20_000, async () => {
    const mk = (await client.get<KubeObject & Json>(`${masterKeysPath}/${MK}`)) as Json;
    const v = (mk.status as Json).primaryKeyVersion as string;
    return v !== oldPrimary ? v : undefined;
  });
  // At 40 re-wraps a second this takes ~3 s: stop the operator hard in the middle.
  const moved = await eventually('some re-wrapped', 30_000, async () => {
    const n = (await listDataKeys(suite.ns)).filter(
      (d) => d.metadata.name.startsWith('burst-') && d.status?.keyVersionId === primary,
    ).length;
    return n >= 5 ? n : undefined;
  });
  await op.kill9();
  expect(moved).toBeLessThan(names.length);
  op = await suite.start({ args: OPERATOR_ARGS });

  await eventually('every burst generation on the new primary', 90_000, async () => {
    for (const n of names) {
      const s = secrets.get(`${suite.ns}/${n}`);
      if (!s || !generationsOf(s).every((e) => e.keyVersionId === primary)) return undefined;
    }
    return true;
  });
  for (const n of names) {
    const secret = await getSecret(n);
    const entries = generationsOf(secret);
    expect(entries.map((e) => e.generation)).toEqual([1, 2]);
    expect(hex(await decryptGenerations(op, secret))).toEqual(before.get(n));
    expect((await getDataKey(n)).status?.generations).toEqual(entries);
  }
});

test('a Secret and status of the first layout are rewritten to layout 2 with the same data key', async () => {
  const name = 'migrated';
  await applyObjects([dataKey(suite.ns, name, { masterKeyRef: { name: MK } })]);
  const { secret } = await waitGeneration(name, 1);
  const plaintext = (await decryptSecret(op, secret)).toString('hex');
  await op.stop();

  // What the first layout held: raw blob bytes, no generations, no layout label.
  const text = (k: string) => decode(secret.data?.[k]);
  const b64 = (v: string) => Buffer.from(v).toString('base64');
  await client.replace(secretPath(name), {
    ...secret,
    metadata: {
      ...secret.metadata,
      labels: { 'kms.datakey.io/datakey': name },
    },
    data: {
      keyId: secret.data?.keyId,
      keyVersionId: secret.data?.keyVersionId,
      flow: secret.data?.flow,
      ciphertextBlob: text('ciphertextBlob'), // base64 of the raw bytes
      ...(text('flow') === 'Standard'
        ? { encryptionContext: secret.data?.encryptionContext }
        : { algorithm: b64('AES_GCM'), iv: text('iv'), aad: text('aad') }),
    },
  });
  const dk = await getDataKey(name);
  await client.mergePatch(`${dkPath(name)}/status`, {
    status: { currentGeneration: null, generations: null, regenerateTokensSeen: null },
  });
  expect(dk.status?.ciphertextBlob).toBe(text('ciphertextBlob'));

  op = await suite.start({ args: OPERATOR_ARGS });
  const migrated = await waitGeneration(name, 1);
  expect(migrated.secret.metadata.labels?.['kms.datakey.io/layout']).toBe('2');
  expect(migrated.secret.data?.ciphertextBlob).toBe(secret.data?.ciphertextBlob);
  expect(generationsOf(migrated.secret)).toMatchObject([
    { generation: 1, ciphertextBlob: text('ciphertextBlob') },
  ]);
  expect((await decryptSecret(op, migrated.secret)).toString('hex')).toBe(plaintext);
  expect(await eventsFor(suite.ns, name, 'DataKeyReissued')).toEqual([]);
  expect(await eventsFor(suite.ns, name, 'SecretRestored')).toEqual([]);
});

leakScanTests(suite, () => lastSecret);

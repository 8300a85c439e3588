// Restarts of the operator: a clean SIGTERM restart and a kill -9 in the middle
// of a burst of 200 DataKeys. A data key is generated once: no Secret is ever
// written with a second ciphertext, watched across the whole run.
import { createLogger } from '../../src/common/logger';
import { Informer } from '../../src/runtime/informer';
import type { KubeObject } from '../../src/runtime/kube-client';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  dataKeysPath,
  decode,
  decryptSecret,
  leakScanTests,
  listDataKeys,
  masterKey,
  masterKeysPath,
  readyOf,
  secretsPath,
  useOperatorSuite,
  waitAllReady,
  waitCondition,
  type SecretObject,
} from '../helpers/operator-suite';
import { eventually, sleep } from '../helpers/wait';

type EventObject = KubeObject & {
  involvedObject: { name: string };
  reason: string;
  count?: number;
};

const suite = useOperatorSuite('restart');
const MK = suite.mk('burst');
const BURST = 200;
let op: OperatorProcess;

/** Every ciphertextBlob ever seen per Secret name, from a watch over the whole run. */
const seen = new Map<string, Set<string>>();
const secrets = new Informer<SecretObject>(
  client,
  { path: secretsPath(suite.ns), labelSelector: 'kms.datakey.io/datakey' },
  createLogger('test-watch', { level: 'silent' }),
);
secrets.on((_event, secret) => {
  const blob = secret.data?.ciphertextBlob;
  if (!blob) return;
  const set = seen.get(secret.metadata.name) ?? new Set<string>();
  set.add(blob);
  seen.set(secret.metadata.name, set);
});

beforeAll(async () => {
  secrets.start();
  await secrets.synced;
  op = await suite.start();
  expect((await applyObjects([masterKey(MK)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${MK}`, 'True');
});
afterAll(() => secrets.stop());

const blobsOf = async (names: string[]) =>
  Object.fromEntries(
    await Promise.all(
      names.map(async (n) => {
        const s = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${n}`);
        return [n, s.data?.ciphertextBlob] as const;
      }),
    ),
  );

test('SIGTERM and start again: the lease is released at once and no ciphertext changes', async () => {
  const names = ['steady-0', 'steady-1', 'steady-2', 'steady-3', 'steady-4'];
  await applyObjects(names.map((n) => dataKey(suite.ns, n, { masterKeyRef: { name: MK } })));
  await waitAllReady(suite.ns, names.length, 60_000);
  const before = await blobsOf(names);

  const exit = await op.stop();
  expect(exit).toEqual({ code: 0, signal: null });
  const t0 = Date.now();
  op = await suite.start();
  // A clean stop releases the lease: no waiting out the 15 s lease duration.
  await eventually('the restarted operator leads', 10_000, async () =>
    (await op.leader()) === 1 ? true : undefined,
  );
  expect(Date.now() - t0).toBeLessThan(10_000);

  // It reconciles (a new DataKey becomes Ready), and the old ones keep their blob.
  await applyObjects([dataKey(suite.ns, 'steady-5', { masterKeyRef: { name: MK } })]);
  await waitCondition(`${dataKeysPath(suite.ns)}/steady-5`, 'True');
  await sleep(2000);
  expect(await blobsOf(names)).toEqual(before);
  for (const n of names) expect(seen.get(n)?.size).toBe(1);
});

test(`kill -9 in the middle of a burst of ${BURST} DataKeys: all become Ready, each key generated once`, async () => {
  const names = Array.from({ length: BURST }, (_, i) => `burst-${String(i).padStart(3, '0')}`);
  const applied = applyObjects(
    names.map((n) => dataKey(suite.ns, n, { masterKeyRef: { name: MK } })),
  );
  // Kill once some, not all, of the burst's Secrets exist.
  const atKill = await eventually('some burst Secrets', 90_000, async () => {
    const n = [...seen.keys()].filter((k) => k.startsWith('burst-')).length;
    return n >= 15 ? n : undefined;
  });
  await op.kill9();
  const killedWith = [...seen.keys()].filter((k) => k.startsWith('burst-')).length;
  expect((await applied).code).toBe(0);
  expect(atKill).toBeLessThan(BURST);
  expect(killedWith).toBeLessThan(BURST);

  op = await suite.start();
  const all = await waitAllReady(suite.ns, BURST + 6, 150_000);

  await eventually('the watch has caught up', 10_000, async () =>
    names.every((n) => seen.has(n)) ? true : undefined,
  );
  const rewritten = [...seen].filter(([, blobs]) => blobs.size !== 1).map(([n]) => n);
  expect(rewritten).toEqual([]);
  for (const dk of all) {
    const secret = secrets.get(`${suite.ns}/${dk.spec.secretName ?? dk.metadata.name}`);
    expect(readyOf(dk)?.status).toBe('True');
    expect(dk.status?.ciphertextBlob).toBeDefined();
    expect(decode(secret?.data?.ciphertextBlob)).toBe(dk.status?.ciphertextBlob);
    expect([...(seen.get(dk.metadata.name) ?? [])].map(decode)).toEqual([
      dk.status?.ciphertextBlob,
    ]);
  }

  // At most one Generated event per DataKey (an event may be lost to the kill).
  const events = await client.list<EventObject>(`/api/v1/namespaces/${suite.ns}/events`);
  const perKey = new Map<string, number>();
  for (const e of events.items.filter((e) => e.reason === 'Generated')) {
    perKey.set(e.involvedObject.name, (perKey.get(e.involvedObject.name) ?? 0) + (e.count ?? 1));
  }
  expect([...perKey].filter(([, n]) => n > 1)).toEqual([]);
  expect(perKey.size).toBeGreaterThan(BURST / 2);
  expect(events.items.filter((e) => e.reason === 'DataKeyReissued')).toEqual([]);
});

test('every burst Secret decrypts through the KMS API to a distinct key', async () => {
  const items = (await listDataKeys(suite.ns)).map((d) => d.metadata.name);
  const plaintexts = new Set<string>();
  for (let i = 0; i < items.length; i += 20) {
    const batch = await Promise.all(
      items.slice(i, i + 20).map(async (n) => {
        const secret = secrets.get(`${suite.ns}/${n}`) as SecretObject;
        return (await decryptSecret(op, secret)).toString('hex');
      }),
    );
    for (const p of batch) plaintexts.add(p);
  }
  expect(plaintexts.size).toBe(BURST + 6);
});

leakScanTests(suite, () => secrets.get(`${suite.ns}/burst-000`));

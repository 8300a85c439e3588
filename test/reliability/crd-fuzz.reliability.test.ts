// CRD fuzz through the real API server: random and boundary MasterKeys and
// DataKeys, each built from one mutation whose verdict is known (a valid
// variant, or an invalid value naming its field). Every invalid object is
// refused by the schema or CEL with a message naming the field; the valid ones
// are accepted and reconciled without crashing the operator or leaving it
// looping hot, and its reconcile metric counts what happened.
import * as fs from 'node:fs';
import { KubeApiError } from '../../src/runtime/kube-client';
import {
  client,
  dataKeysPath,
  masterKeysPath,
  readyOf,
  useOperatorSuite,
  type DataKeyObject,
  type Json,
} from '../helpers/operator-suite';
import { recordFigures } from '../helpers/reliability-figures';
import { eventually, sleep } from '../helpers/wait';

const FULL = process.env.DATAKEY_RELIABILITY === 'full';
const OBJECTS = FULL ? 1000 : 300;

const suite = useOperatorSuite('fuzz');

// A small deterministic generator: a failure names its seed and can be replayed.
const SEED = Number(process.env.DATAKEY_FUZZ_SEED ?? Date.now() % 100_000);
let state = SEED;
const rand = () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = <T>(xs: T[]): T => xs[int(0, xs.length - 1)];
const chars = (alphabet: string, n: number) =>
  Array.from({ length: n }, () => alphabet[int(0, alphabet.length - 1)]).join('');
const DNS = 'abcdefghijklmnopqrstuvwxyz0123456789';
const dnsName = (n: number) =>
  (n <= 2 ? chars(DNS, n) : `${chars(DNS, 1)}${chars(`${DNS}-.`, n - 2)}${chars(DNS, 1)}`).replace(
    /[-.]{2,}/g,
    'a',
  );
const ANY = 'aZ09 _-./:+=@ü€字"\\';

interface Mutation {
  /** The field an invalid value must be named by; undefined for a valid variant. */
  field?: string;
  apply(spec: Json): void;
}

const valid = (apply: (spec: Json) => void): Mutation => ({ apply });
const invalid = (field: string, apply: (spec: Json) => void): Mutation => ({ field, apply });

const dataKeyMutations = (mk: string): Mutation[] => [
  valid((s) => (s.keySpec = pick(['AES_256', 'AES_128']))),
  valid((s) => (s.numberOfBytes = pick([1, 1024, int(1, 1024)]))),
  valid((s) => {
    const n = pick([0, 1, 64, int(1, 64)]);
    s.encryptionContext = Object.fromEntries(
      Array.from({ length: n }, (_, i) => [
        `k${i}-${chars(DNS, int(1, 8))}`,
        chars(ANY, pick([0, 1024, int(0, 40)])),
      ]),
    );
  }),
  valid((s) => (s.secretName = dnsName(pick([1, 253, int(1, 60)])))),
  valid((s) => (s.masterKeyRef = { name: pick([mk, dnsName(int(1, 60))]) })),
  invalid('spec.keySpec', (s) => (s.keySpec = pick(['AES_512', 'aes_256', '', 'RSA_2048']))),
  invalid('spec.numberOfBytes', (s) => (s.numberOfBytes = pick([0, 1025, -1, 2 ** 40, 1.5, '32']))),
  invalid('spec.masterKeyRef', (s) => delete s.masterKeyRef),
  invalid(
    'spec.masterKeyRef.name',
    (s) => (s.masterKeyRef = { name: pick(['', 'Bad_Name', 'a'.repeat(254), '-x', 7]) }),
  ),
  invalid(
    'spec.encryptionContext',
    (s) =>
      (s.encryptionContext = pick([
        { 'kms.datakey.io/namespace': 'x' },
        Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])),
        { k: 'v'.repeat(1025) },
        { k: 5 },
        'a string',
      ])),
  ),
  invalid(
    'spec.secretName',
    (s) => (s.secretName = pick(['', 'UPPER', 'a'.repeat(254), 'x_y', '.a'])),
  ),
  invalid('spec.bogus', (s) => (s.bogus = true)),
];

const masterKeyMutations: Mutation[] = [
  valid((s) => (s.description = chars(ANY, pick([0, 8192, int(0, 200)])))),
  valid((s) => (s.keySpec = pick(['Aliyun_AES_256', 'Aliyun_AES_128']))),
  valid((s) => (s.enabled = pick([true, false]))),
  valid((s) => {
    const n = pick([1, 32, int(1, 5)]);
    s.aliases = Array.from(
      { length: n },
      (_, i) => `alias/${suite.id}/${chars('ab', 6)}${i}${chars('AZaz09_/-', int(0, 20))}`,
    );
  }),
  valid(
    (s) =>
      (s.rotation = {
        automatic: true,
        interval: pick(['7d', '365d', '168h', '31536000s', `${int(7, 365)}d`]),
      }),
  ),
  valid((s) => (s.rotation = { automatic: false })),
  invalid('spec.keySpec', (s) => (s.keySpec = pick(['RSA_2048', 'AES_256', '']))),
  invalid('spec.description', (s) => (s.description = 'd'.repeat(8193))),
  invalid(
    'spec.aliases[0]',
    (s) =>
      (s.aliases = [
        pick([
          'alias/acs',
          'alias/acs/x',
          'noalias',
          'alias/',
          `alias/${'a'.repeat(256)}`,
          'alias/a b',
        ]),
      ]),
  ),
  invalid(
    'spec.aliases',
    (s) => (s.aliases = Array.from({ length: 33 }, (_, i) => `alias/many${i}`)),
  ),
  invalid('spec.aliases[1]', (s) => (s.aliases = ['alias/twice', 'alias/twice'])),
  invalid(
    'spec.rotation.interval',
    (s) =>
      (s.rotation = {
        automatic: true,
        interval: pick(['6d', '366d', '10x', '0d', '1', 'd', '9999999999d']),
      }),
  ),
  invalid('spec.rotation', (s) => (s.rotation = { automatic: true })),
  invalid('spec.enabled', (s) => (s.enabled = pick(['yes', 1, 'false']))),
];

interface Outcome {
  kind: string;
  name: string;
  field?: string;
  status: number;
  message: string;
}

async function submit(path: string, object: Json): Promise<{ status: number; message: string }> {
  try {
    await client.request('POST', path, { body: object, query: { fieldValidation: 'Strict' } });
    return { status: 201, message: '' };
  } catch (err) {
    if (err instanceof KubeApiError) return { status: err.status, message: err.message };
    throw err;
  }
}

function counter(metrics: string, controller: string, result: string): number {
  const re = new RegExp(
    `^datakey_reconcile_total\\{controller="${controller}",result="${result}"\\} (\\S+)$`,
    'm',
  );
  return Number(re.exec(metrics)?.[1] ?? 0);
}

function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks
}

test(`${OBJECTS} fuzzed MasterKeys and DataKeys: invalid ones refused naming the field, valid ones reconciled, the operator neither crashes nor spins (seed ${SEED})`, async () => {
  const op = await suite.start({ kms: false });
  const mk = suite.mk('fuzz-base');
  await client.create(masterKeysPath, {
    apiVersion: 'kms.datakey.io/v1alpha1',
    kind: 'MasterKey',
    metadata: { name: mk },
    spec: {},
  });
  const outcomes: Outcome[] = [];
  const mutations = dataKeyMutations(mk);
  for (let i = 0; i < OBJECTS; i++) {
    const isDataKey = i % 2 === 0;
    const pool = isDataKey ? mutations : masterKeyMutations;
    // Mostly one mutation; sometimes a valid one added, so that valid variants combine.
    const chosen = [pick(pool), ...(rand() < 0.5 ? [pick(pool.filter((m) => !m.field))] : [])];
    const field = chosen.find((m) => m.field)?.field;
    const spec: Json = isDataKey ? { masterKeyRef: { name: mk } } : {};
    for (const m of chosen.reverse()) m.apply(spec);
    const name = isDataKey ? `dk-${i}` : suite.mk(`m${i}`);
    const object = {
      apiVersion: 'kms.datakey.io/v1alpha1',
      kind: isDataKey ? 'DataKey' : 'MasterKey',
      metadata: isDataKey ? { name, namespace: suite.ns } : { name },
      spec,
    };
    const r = await submit(isDataKey ? dataKeysPath(suite.ns) : masterKeysPath, object);
    outcomes.push({ kind: object.kind, name, field, ...r });
  }

  const wronglyAccepted = outcomes.filter((o) => o.field && o.status === 201);
  const unnamed = outcomes.filter(
    (o) => o.field && o.status !== 201 && !o.message.includes(o.field),
  );
  const refusedValid = outcomes.filter((o) => !o.field && o.status !== 201);
  const serverErrors = outcomes.filter((o) => o.status >= 500);
  recordFigures({ fault: 'crd-fuzz', '5xx': serverErrors.length, crashes: op.alive() ? 0 : 1 });
  expect(wronglyAccepted).toEqual([]);
  expect(unnamed).toEqual([]);
  expect(refusedValid).toEqual([]);
  expect(outcomes.filter((o) => o.field).every((o) => o.status === 422 || o.status === 400)).toBe(
    true,
  );

  // Every accepted DataKey gets a Ready condition (True, or False with a reason).
  const accepted = outcomes.filter((o) => o.status === 201 && o.kind === 'DataKey').length;
  expect(accepted).toBeGreaterThan(OBJECTS / 10);
  await eventually(
    'every accepted DataKey has a Ready condition',
    300_000,
    async () => {
      const items = (await client.list<DataKeyObject>(dataKeysPath(suite.ns))).items;
      return items.length === accepted && items.every((d) => readyOf(d)) ? true : undefined;
    },
    1000,
  );

  // Settled: over a quiet window the operator spends little CPU and its error count barely moves.
  const before = { cpu: cpuSeconds(op.pid), metrics: await op.metrics() };
  const windowS = 10;
  await sleep(windowS * 1000);
  const after = { cpu: cpuSeconds(op.pid), metrics: await op.metrics() };
  const cpuShare = (after.cpu - before.cpu) / windowS;
  const errors = (m: string) => counter(m, 'datakey', 'error') + counter(m, 'masterkey', 'error');
  const handled = (m: string) =>
    ['success', 'requeue'].reduce(
      (n, r) => n + counter(m, 'datakey', r) + counter(m, 'masterkey', r),
      0,
    );
  expect(op.alive()).toBe(true);
  expect(cpuShare).toBeLessThan(0.25);
  // Valid MasterKeys may conflict over a random alias (AliasConflict): they retry with
  // exponential backoff, a handful of times each in the window; a hot loop would be thousands.
  expect(errors(after.metrics) - errors(before.metrics)).toBeLessThan(accepted);
  // The metric counts the reconciles that happened: at least one per accepted DataKey.
  expect(handled(after.metrics)).toBeGreaterThanOrEqual(accepted);
  expect((await op.readyz()).status).toBe(200);
});

import {
  needsRestart,
  restartPatch,
  restartedFor,
  type Workload,
} from '../../src/controllers/workload-policy';

const GEN2_CREATED = '2026-01-02T00:00:00Z';

const workload = (
  template: Record<string, string>,
  patch: { created?: string; restartedFor?: string } = {},
): Workload => ({
  metadata: {
    name: 'web',
    namespace: 'shop',
    resourceVersion: '42',
    creationTimestamp: patch.created ?? '2026-01-01T00:00:00Z',
    annotations: patch.restartedFor
      ? { 'kms.datakey.io/restarted-for': patch.restartedFor }
      : undefined,
  },
  spec: { template: { metadata: { annotations: template } } },
});
const optedIn = {
  'kms.datakey.io/inject': 'payments, orders',
  'kms.datakey.io/restart-on-regenerate': 'true',
};

describe('needsRestart: at most once per regeneration, opt-in only', () => {
  test('a workload asking for the DataKey and opting in is rolled for a generation made after it', () => {
    expect(needsRestart(workload(optedIn), 'orders', 2, GEN2_CREATED)).toBe(true);
  });

  test('without the opt-in, or not asking for that DataKey: untouched', () => {
    const { 'kms.datakey.io/restart-on-regenerate': _r, ...notOptedIn } = optedIn;
    expect(needsRestart(workload(notOptedIn), 'orders', 2, GEN2_CREATED)).toBe(false);
    expect(
      needsRestart(
        workload({ ...optedIn, 'kms.datakey.io/restart-on-regenerate': 'yes' }),
        'orders',
        2,
        GEN2_CREATED,
      ),
    ).toBe(false);
    expect(needsRestart(workload(optedIn), 'invoices', 2, GEN2_CREATED)).toBe(false);
  });

  test('already rolled for this generation (or a later one): never again', () => {
    const rolled = workload(optedIn, { restartedFor: '{"orders":2}' });
    expect(needsRestart(rolled, 'orders', 2, GEN2_CREATED)).toBe(false);
    expect(needsRestart(rolled, 'orders', 3, GEN2_CREATED)).toBe(true);
  });

  test('created after the generation was made: its pods have it already', () => {
    const late = workload(optedIn, { created: '2026-01-03T00:00:00Z' });
    expect(needsRestart(late, 'orders', 2, GEN2_CREATED)).toBe(false);
  });
});

test('the record is read from own properties only; a malformed one reads as none', () => {
  expect(
    restartedFor(workload(optedIn, { restartedFor: '{"__proto__":{"x":1},"orders":"2"}' })),
  ).toEqual(new Map());
  expect(restartedFor(workload(optedIn, { restartedFor: 'not json' }))).toEqual(new Map());
  expect(restartedFor(workload(optedIn, { restartedFor: '[1]' }))).toEqual(new Map());
});

test('the roll and its record go in one patch, guarded by the resourceVersion', () => {
  const patch = restartPatch(
    workload(optedIn, { restartedFor: '{"payments":4}' }),
    'orders',
    2,
    new Date('2026-01-05T00:00:00Z'),
  );
  expect(patch).toEqual({
    metadata: {
      resourceVersion: '42',
      annotations: { 'kms.datakey.io/restarted-for': '{"payments":4,"orders":2}' },
    },
    spec: {
      template: {
        metadata: { annotations: { 'kms.datakey.io/restartedAt': '2026-01-05T00:00:00.000Z' } },
      },
    },
  });
});

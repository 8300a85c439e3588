// The Lua conversion and the health checks' edge cases; the cluster test runs
// the same scripts against objects the operator really produced.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as load } from 'yaml';
import { HEALTH_SCRIPTS, argoHealth, runLua, toLua } from '../helpers/argocd';

test('toLua: a JSON value becomes an equal Lua table (strings byte-exact)', () => {
  const value = {
    s: 'quote " backslash \\ newline \n tab \t ünïcödé 🔑 digits after escape \u00011',
    n: [0, -3, 1.5, 1e21],
    b: [true, false],
    nested: { 'key with spaces': [{ a: 'x' }], '': 'empty key' },
  };
  const out = runLua(
    [
      `local v = ${toLua(value)}`,
      'io.write(v.s, "|", v.n[1], ",", v.n[2], ",", v.n[3], ",", #v.n, "|")',
      'io.write(tostring(v.b[1]), ",", tostring(v.b[2]), "|")',
      'io.write(v.nested["key with spaces"][1].a, "|", v.nested[""])',
    ].join('\n'),
  );
  expect(out).toBe(`${value.s}|0,-3,1.5,4|true,false|x|empty key`);
});

test('toLua: null and undefined are nil', () => {
  expect(runLua(`local v = ${toLua({ a: null, b: [null] })} io.write(tostring(v.a))`)).toBe('nil');
});

test.each(['MasterKey', 'DataKey'] as const)(
  '%s: no status, or a condition of an older generation, is Progressing',
  (kind) => {
    const fresh = { metadata: { name: 'x', generation: 1 }, spec: {} };
    expect(argoHealth(kind, fresh).status).toBe('Progressing');
    const stale = {
      metadata: { name: 'x', generation: 3 },
      status: {
        observedGeneration: 2,
        conditions: [{ type: 'Ready', status: 'True', reason: 'X', observedGeneration: 2 }],
      },
    };
    expect(argoHealth(kind, stale)).toEqual({
      status: 'Progressing',
      message: 'Waiting for the operator to reconcile generation 3',
    });
  },
);

test('MasterKey: Ready while re-wrapping after a rotation is Progressing', () => {
  const rotating = {
    metadata: { name: 'x', generation: 1 },
    status: {
      conditions: [
        { type: 'Ready', status: 'True', reason: 'KeyEnabled', observedGeneration: 1 },
        { type: 'Rotating', status: 'True', reason: 'Rewrapping', message: '3 of 10' },
      ],
    },
  };
  expect(argoHealth('MasterKey', rotating)).toEqual({
    status: 'Progressing',
    message: 'Re-wrapping after rotation: 3 of 10',
  });
});

test('docs/argocd/README.md embeds exactly the two scripts under their argocd-cm keys', () => {
  const page = fs.readFileSync(
    path.join(path.dirname(HEALTH_SCRIPTS.MasterKey), 'README.md'),
    'utf8',
  );
  const block = /```yaml\n([\s\S]*?)```/.exec(page)?.[1] ?? '';
  const cm = load(block) as { data: Record<string, string> };
  expect(cm.data).toEqual({
    'resource.customizations.health.kms.datakey.io_MasterKey': fs.readFileSync(
      HEALTH_SCRIPTS.MasterKey,
      'utf8',
    ),
    'resource.customizations.health.kms.datakey.io_DataKey': fs.readFileSync(
      HEALTH_SCRIPTS.DataKey,
      'utf8',
    ),
  });
});

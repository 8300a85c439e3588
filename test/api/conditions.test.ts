import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  ConditionType,
  DataKeyEvent,
  DataKeyReason,
  MasterKeyEvent,
  MasterKeyReason,
  PodEvent,
  RootKeyEvent,
} from '../../src/api/conditions';

const docs = path.resolve(__dirname, '../../docs');
const read = (file: string) => fs.readFileSync(path.join(docs, file), 'utf8');
/** Names a document states as code: `Name`. */
const quoted = (text: string) => new Set([...text.matchAll(/`([A-Za-z]+)`/g)].map((m) => m[1]));
/** Strings a Lua script compares a condition's type or reason with. */
const luaNames = (text: string) =>
  [...text.matchAll(/c\.type == "(\w+)"|reason [~=]= "(\w+)"/g)].map((m) => m[1] ?? m[2]);

test('docs/operator.md names every condition type, reason and controller event reason', () => {
  const named = quoted(read('operator.md'));
  const constants = [
    ...Object.values(ConditionType),
    ...Object.values(MasterKeyReason),
    ...Object.values(DataKeyReason),
    ...Object.values(MasterKeyEvent),
    ...Object.values(DataKeyEvent),
    ...Object.values(RootKeyEvent),
  ];
  expect(constants.filter((name) => !named.has(name))).toEqual([]);
});

test('docs/injection.md names every pod event reason', () => {
  const named = quoted(read('injection.md'));
  expect(Object.values(PodEvent).filter((name) => !named.has(name))).toEqual([]);
});

test.each(['masterkey-health.lua', 'datakey-health.lua'])(
  'the Argo CD script %s compares only with names the operator writes',
  (file) => {
    const names = luaNames(read(path.join('argocd', file)));
    expect(names.length).toBeGreaterThan(0);
    const written = new Set<string>([
      ...Object.values(ConditionType),
      ...Object.values(MasterKeyReason),
      ...Object.values(DataKeyReason),
    ]);
    expect(names.filter((name) => !written.has(name))).toEqual([]);
  },
);

test('the MasterKey script tells a disabled key and a rotation apart by their names', () => {
  const names = luaNames(read('argocd/masterkey-health.lua'));
  expect(names).toEqual(
    expect.arrayContaining([
      ConditionType.Ready,
      ConditionType.Rotating,
      MasterKeyReason.KeyDisabled,
    ]),
  );
});

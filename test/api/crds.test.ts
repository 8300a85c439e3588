import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { parse as load } from 'yaml';
import { buildCrds } from '../../src/api/crds';
import { CRD_FOLDERS, renderCrd } from '../../harness/generate-crds';

const root = path.resolve(__dirname, '../..');

// The chart's crds/ is a second copy of the same generated files: Helm installs
// it, kubectl users apply the top-level one, and neither may drift.
test.each(CRD_FOLDERS)(
  'committed CRDs in %s match the schema source (run npm run gen:crds)',
  (folder) => {
    const generated = buildCrds();
    expect(readdirSync(path.join(root, folder)).sort()).toEqual(
      generated.map((g) => g.file).sort(),
    );
    for (const { file, crd } of generated) {
      const committed = readFileSync(path.join(root, folder, file), 'utf8');
      expect(committed).toBe(renderCrd(crd));
    }
  },
);

test('the chart has a crds/ copy to keep in step', () => {
  expect(CRD_FOLDERS).toContain(path.join('charts', 'datakey-operator', 'crds'));
});

test('both kinds have a status subresource, short names and a Ready printer column', () => {
  const byKind = Object.fromEntries(
    buildCrds().map(({ crd }) => [
      (crd as { spec: { names: { kind: string } } }).spec.names.kind,
      crd,
    ]),
  );
  for (const [kind, shortName] of [
    ['MasterKey', 'mk'],
    ['DataKey', 'dk'],
  ]) {
    type Version = { subresources: unknown; additionalPrinterColumns: { name: string }[] };
    type Spec = { names: { shortNames: string[] }; versions: Version[] };
    const spec = (load(renderCrd(byKind[kind])) as { spec: Spec }).spec;
    expect(spec.names.shortNames).toEqual([shortName]);
    expect(spec.versions[0].subresources).toEqual({ status: {} });
    expect(spec.versions[0].additionalPrinterColumns.map((c) => c.name)).toContain('Ready');
  }
});

test('the rotation minimum can be lowered only by an explicit build option', () => {
  const rules = (minRotationSeconds?: number) =>
    JSON.stringify(buildCrds({ minRotationSeconds })[0].crd);
  expect(rules()).toContain('>= 604800');
  expect(rules(10)).toContain('>= 10 ');
});

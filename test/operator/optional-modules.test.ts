import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

// Every replica keeps what it loads for its whole life: the servers a flag turns on
// (pod injection, --kms-listen, --kms-instance-listen) are imported only when it is
// given. Checked on the build (npm test builds first), as the image runs it.
const DIST = path.resolve(__dirname, '../../dist');

function allModulesLoadedBy(file: string): string[] {
  const out = execFileSync(
    process.execPath,
    [
      '-e',
      `require(${JSON.stringify(file)});` +
        `process.stdout.write(JSON.stringify(Object.keys(require.cache)))`,
    ],
    { encoding: 'utf8' },
  );
  return JSON.parse(out) as string[];
}

function modulesLoadedBy(file: string): string[] {
  return allModulesLoadedBy(file)
    .filter((f) => f.startsWith(`${DIST}/`))
    .map((f) => path.relative(DIST, f));
}

test('loading the operator loads none of the optional servers', () => {
  const loaded = modulesLoadedBy(path.join(DIST, 'operator', 'operator.js'));
  expect(loaded).toContain('operator/operator.js');
  expect(loaded).toContain('controllers/datakey-controller.js');
  const optional = loaded.filter((f) => /^(kms-api|kms-instance-api|injection)\//.test(f));
  expect(optional).toEqual([]);
});

test('the root-key seal and the Alibaba SDK load only with --seal', () => {
  const all = allModulesLoadedBy(path.join(DIST, 'operator', 'operator.js'));
  const loaded = all.filter((f) => f.startsWith(`${DIST}/`)).map((f) => path.relative(DIST, f));
  // The guard names seal failures: only the error class, apart from the client.
  expect(loaded.filter((f) => f.startsWith('seal/'))).toEqual(['seal/seal-error.js']);
  expect(loaded.filter((f) => /^operator\/seal/.test(f))).toEqual([]);
  expect(all.filter((f) => f.includes('/node_modules/@alicloud/'))).toEqual([]);
});

import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const CLI = path.resolve(__dirname, '../dist/cli.js');

test('the product build says `datakey dev` is not in it, and exits as for a usage error', () => {
  const run = spawnSync(process.execPath, [CLI, 'dev', '--once'], { encoding: 'utf8' });
  expect(run.status).toBe(2);
  expect(run.stderr).toContain('datakey dev is not in this build');
});

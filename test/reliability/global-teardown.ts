import * as fs from 'node:fs';
import * as path from 'node:path';
import { down } from '../../harness/devcluster/cluster';
import { summarize } from '../helpers/reliability-figures';

/** Stops the suite's control plane and prints its figures as one JSON line. */
export default async function globalTeardown(): Promise<void> {
  const s = globalThis.__DATAKEY_RELIABILITY__;
  if (!s) return;
  if (process.env.DATAKEY_RELIABILITY_KEEP !== '1') await down({ stateDir: s.stateDir });
  const lines = fs.readFileSync(s.figures, 'utf8');
  fs.rmSync(path.dirname(s.figures), { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify(summarize(lines))}\n`);
}

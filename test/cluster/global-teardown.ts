import { down } from '../../harness/devcluster/cluster';
import { checkNodeGone } from './node-gone';

/**
 * Stops the cluster only if the global setup started it; then checks that no
 * process it started is alive and that the node left no host state behind.
 */
export default async function globalTeardown(): Promise<void> {
  const s = globalThis.__DATAKEY_DEVCLUSTER__;
  if (!s?.started || !s.stateDir) return;
  const check = checkNodeGone(s.stateDir, s.hostFilesBefore);
  await down({ stateDir: s.stateDir });
  const problems = await check();
  if (problems.length > 0) {
    throw new Error(`cluster:down left state behind:\n  ${problems.join('\n  ')}`);
  }
  process.stderr.write('[cluster tests] cluster stopped; no process or host state left\n');
}

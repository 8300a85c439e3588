import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { up } from '../../harness/devcluster/cluster';

declare global {
  var __DATAKEY_RELIABILITY__: { stateDir: string; figures: string } | undefined;
}

/**
 * The reliability suite's own control plane, in its own state folder
 * (.cluster-reliability), without a node: its faults (kill -9 and SIGSTOP of
 * etcd and the API server) never touch the cluster other tests or a developer
 * use. etcd compaction is off, so the leak scan can read every revision; the
 * suite compacts once, on purpose, to force 410 Gone.
 */
export default async function globalSetup(): Promise<void> {
  const stateDir = path.resolve(__dirname, '../../.cluster-reliability');
  process.env.DATAKEY_CLUSTER_DIR = stateDir;
  process.stderr.write(`\n[reliability] starting the control plane in ${stateDir}\n`);
  const r = await up({
    stateDir,
    node: false,
    apiserverArgs: ['--etcd-compaction-interval=0'],
  });
  process.env.KUBECONFIG = r.kubeconfig;
  process.env.DATAKEY_LOCAL_CLUSTER = '1';
  process.env.DATAKEY_KUBECTL = r.binaries.kubectl;
  process.env.DATAKEY_NODE = '';
  const figures = path.join(
    fs.mkdtempSync(path.join(os.tmpdir(), 'datakey-reliability-')),
    'figures.jsonl',
  );
  fs.writeFileSync(figures, '');
  process.env.DATAKEY_RELIABILITY_FIGURES = figures;
  globalThis.__DATAKEY_RELIABILITY__ = { stateDir, figures };
}

import * as path from 'node:path';
import { ensureBinaries } from '../../src/devcluster/build';
import { up } from '../../src/devcluster/cluster';
import { defaultStateDir } from '../../src/devcluster/paths';

declare global {
  var __DATAKEY_DEVCLUSTER__: { started: boolean; stateDir?: string } | undefined;
}

/**
 * One control plane per run of the cluster project. A KUBECONFIG supplied by
 * the caller (a kind cluster, or `npm run cluster:up`) is used as is; otherwise
 * the local control plane is started (built first when the cache lacks it), or
 * reused when one is already running in this work tree.
 */
export default async function globalSetup(): Promise<void> {
  if (process.env.KUBECONFIG) {
    process.stderr.write(
      `\n[cluster tests] using the cluster of KUBECONFIG=${process.env.KUBECONFIG}\n`,
    );
    globalThis.__DATAKEY_DEVCLUSTER__ = { started: false };
    if (path.resolve(process.env.KUBECONFIG) === path.join(defaultStateDir(), 'kubeconfig')) {
      process.env.DATAKEY_LOCAL_CLUSTER = '1'; // the one `npm run cluster:up` prints
      process.env.DATAKEY_KUBECTL ??= (await ensureBinaries()).kubectl;
    }
    return;
  }
  process.stderr.write('\n[cluster tests] starting (or reusing) the local control plane\n');
  const r = await up();
  process.env.KUBECONFIG = r.kubeconfig;
  process.env.DATAKEY_LOCAL_CLUSTER = '1';
  process.env.DATAKEY_KUBECTL = r.binaries.kubectl;
  globalThis.__DATAKEY_DEVCLUSTER__ = { started: !r.reused, stateDir: r.stateDir };
}

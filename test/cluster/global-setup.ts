import * as path from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { ensureBinaries } from '../../harness/devcluster/build';
import { up } from '../../harness/devcluster/cluster';
import { hostFiles } from '../../harness/devcluster/node';
import { defaultStateDir } from '../../harness/devcluster/paths';

declare global {
  var __DATAKEY_DEVCLUSTER__:
    { started: boolean; stateDir?: string; hostFilesBefore?: string[] } | undefined;
}

/** The name of a Ready node of the cluster, or '' when it has none. */
async function readyNode(): Promise<string> {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const nodes = await kc.makeApiClient(CoreV1Api).listNode();
  const ready = nodes.items.find((n) =>
    n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
  );
  return ready?.metadata?.name ?? '';
}

/**
 * One cluster per run of the cluster project. A KUBECONFIG supplied by the
 * caller (a kind cluster, or `npm run cluster:up`) is used as is; otherwise
 * the local cluster is started (built first when the cache lacks it), with a
 * node where the machine allows one, or reused when one is already running in
 * this work tree. DATAKEY_NODE names a Ready node ('' when there is none).
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
    process.env.DATAKEY_NODE = await readyNode();
    return;
  }
  process.stderr.write('\n[cluster tests] starting (or reusing) the local cluster\n');
  // What the host had before a node ran: the teardown checks that down() restores it.
  const hostFilesBefore = hostFiles();
  const r = await up();
  if (!r.node) process.stderr.write(`[cluster tests] ${r.noNodeReason ?? 'no node'}\n`);
  process.env.KUBECONFIG = r.kubeconfig;
  process.env.DATAKEY_LOCAL_CLUSTER = '1';
  process.env.DATAKEY_KUBECTL = r.binaries.kubectl;
  process.env.DATAKEY_NODE = r.node ?? '';
  globalThis.__DATAKEY_DEVCLUSTER__ = {
    started: !r.reused,
    stateDir: r.stateDir,
    hostFilesBefore: r.reused ? undefined : hostFilesBefore,
  };
}

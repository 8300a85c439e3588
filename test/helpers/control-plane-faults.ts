import { componentProcess, restartComponent } from '../../harness/devcluster/cluster';
import { defaultStateDir } from '../../harness/devcluster/paths';
import { sleep } from './wait';

/**
 * Faults of the local control plane this test run started (its state folder
 * names the processes; each is checked to be the binary recorded there before
 * it is signalled, so another work tree's cluster is never touched).
 */

export type Component = 'etcd' | 'kube-apiserver';

/** SIGSTOP, wait, SIGCONT (also when the wait is interrupted). */
export async function freeze(component: Component, ms: number): Promise<void> {
  const { pid } = componentProcess(defaultStateDir(), component);
  process.kill(pid, 'SIGSTOP');
  try {
    await sleep(ms);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

/** kill -9 and start again with the same flags; resolves once it serves. */
export function killAndRestart(component: Component): Promise<void> {
  return restartComponent(defaultStateDir(), component);
}

import {
  componentProcess,
  restartComponent,
  type RestartOptions,
} from '../../harness/devcluster/cluster';
import { defaultStateDir } from '../../harness/devcluster/paths';
import { sleep } from './wait';

/**
 * Faults of the local control plane this test run started (its state folder
 * names the processes; each is checked to be the binary recorded there before
 * it is signalled, so another work tree's cluster is never touched).
 */

export type Component = 'etcd' | 'kube-apiserver';

/** SIGSTOP, `work`, SIGCONT (also when the work fails). */
export async function whileFrozen<T>(component: Component, work: () => Promise<T>): Promise<T> {
  const { pid } = componentProcess(defaultStateDir(), component);
  process.kill(pid, 'SIGSTOP');
  try {
    return await work();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

/** SIGSTOP, wait, SIGCONT (also when the wait is interrupted). */
export function freeze(component: Component, ms: number): Promise<void> {
  return whileFrozen(component, () => sleep(ms));
}

/** kill -9 and start again with the same flags (or `options.args` of them); resolves once it serves. */
export function killAndRestart(component: Component, options?: RestartOptions): Promise<void> {
  return restartComponent(defaultStateDir(), component, options);
}

import { DataKeyEvent, WorkloadEvent } from '../api/conditions';
import { ANNOTATION_RESTART_ON_REGENERATE } from '../api/types';
import { currentOf, generationsFromSecret, secretNameOf, type SecretObject } from '../datakey';
import { keyOf } from '../runtime/informer';
import { isForbidden } from '../runtime/kube-client';
import type { ManagedController, Watch } from '../runtime/manager';
import { ready, type ReconcileOutcome } from '../runtime/outcome';
import type { ControllerContext } from './context';
import { ownersOfSecret } from './datakey-controller';
import { WORKLOAD_KINDS, needsRestart, restartPatch, type Workload } from './workload-policy';

/**
 * Workload restarts: once a DataKey's new generation is in its Secret, rolls
 * the Deployments, StatefulSets and DaemonSets of its namespace whose pod
 * template asks for it and carries `restart-on-regenerate: "true"`, once per
 * regeneration. Workloads are listed only then (no informer): the operator
 * needs get/list/patch on them only when the chart grants them.
 */
export class WorkloadController implements ManagedController {
  readonly name = 'workloads';
  readonly watches: Watch<SecretObject>[];
  /** The generation handled per DataKey in this process (a restart lists once more; the records on the workloads decide). */
  private readonly handled = new Map<string, number>();

  constructor(private readonly ctx: ControllerContext) {
    this.watches = [
      {
        informer: ctx.secrets,
        keysFor: (_event, secret) =>
          regenerated(secret) ? ownersOfSecret(secret).slice(0, 1) : [],
      },
    ];
  }

  allKeys(): string[] {
    return this.ctx.dataKeys
      .list()
      .filter((dk) => (dk.status?.currentGeneration ?? 1) > 1)
      .map(keyOf);
  }

  async reconcile(key: string): Promise<ReconcileOutcome> {
    const dataKey = this.ctx.dataKeys.get(key);
    if (!dataKey || dataKey.metadata.deletionTimestamp) {
      this.handled.delete(key);
      return ready();
    }
    const namespace = dataKey.metadata.namespace as string;
    const secret = this.ctx.secrets.get(`${namespace}/${secretNameOf(dataKey)}`);
    const stored = generationsFromSecret(secret);
    if (stored.length === 0) return ready();
    const current = currentOf(stored);
    if (current.generation < 2 || this.handled.get(key) === current.generation) return ready();
    const name = dataKey.metadata.name;
    for (const { kind, plural } of WORKLOAD_KINDS) {
      const path = `/apis/apps/v1/namespaces/${namespace}/${plural}`;
      try {
        const list = await this.ctx.client.list<Workload>(path);
        for (const item of list.items) {
          if (!needsRestart(item, name, current.generation, current.creationTime)) continue;
          const workload = { ...item, apiVersion: 'apps/v1', kind };
          await this.ctx.client.mergePatch(
            `${path}/${item.metadata.name}`,
            restartPatch(workload, name, current.generation, new Date()),
          );
          this.ctx.events.record(
            workload,
            'Normal',
            WorkloadEvent.RestartedForDataKey,
            `Rolled for generation ${current.generation} of DataKey ${name} (${ANNOTATION_RESTART_ON_REGENERATE})`,
          );
        }
      } catch (err) {
        if (!isForbidden(err)) throw err;
        this.ctx.events.record(
          dataKey,
          'Warning',
          DataKeyEvent.WorkloadRestartForbidden,
          `Generation ${current.generation} is not rolled out to workloads with ${ANNOTATION_RESTART_ON_REGENERATE}: the operator may not list and patch ${plural} in namespace ${namespace} (install the chart with workloadRestarts.enabled=true)`,
        );
        break;
      }
    }
    this.handled.set(key, current.generation);
    return ready();
  }
}

/** A Secret holding a generation after the first: its owner may have workloads to roll. */
function regenerated(secret: SecretObject): boolean {
  const stored = generationsFromSecret(secret);
  return stored.length > 0 && currentOf(stored).generation > 1;
}

import type { MasterKey } from '../api/types';
import type { Logger } from '../common/logger';
import type { KmsCore } from '../kms';
import type { Informer } from '../runtime/informer';
import type { KubeObject } from '../runtime/kube-client';
import type { LeaderTask } from '../runtime/manager';

export const MAINTENANCE_INTERVAL_MS = 10_000;

/**
 * The key maintenance `kms serve` runs, on the leader: keys past their deletion
 * window are purged, and keys no MasterKey owns (created through --kms-listen)
 * rotate on their own schedule. A MasterKey's key (its id is the MasterKey's
 * UID) rotates only through the MasterKey controller, with its status, events
 * and re-wrap. The store is reloaded first: another replica may have created
 * keys through its own --kms-listen.
 */
export function keyMaintenance(
  core: KmsCore,
  masterKeys: Informer<MasterKey & KubeObject>,
  logger: Logger,
  intervalMs = MAINTENANCE_INTERVAL_MS,
): LeaderTask {
  return {
    name: 'key-maintenance',
    intervalMs,
    async run() {
      await core.reload();
      const owned = new Set(masterKeys.list().flatMap((mk) => [mk.metadata.uid, mk.status?.keyId]));
      const { rotated, deleted } = await core.runMaintenance({
        rotates: (keyId) => !owned.has(keyId),
      });
      if (rotated.length || deleted.length) logger.info({ rotated, deleted }, 'key maintenance');
    },
  };
}

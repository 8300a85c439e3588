import { isDeepStrictEqual } from 'node:util';
import { ConditionType } from '../api/conditions';
import type { Condition } from '../api/types';
import type { KubeClient, KubeObject } from '../runtime/kube-client';
import type { NotReadyOutcome } from '../runtime/outcome';

/**
 * The one status writer of both controllers.
 *
 * The resourceVersion rule: every status write carries the resourceVersion of
 * the object the decision was made on, so a decision taken on a stale cache
 * fails with 409 and the reconcile is retried on a fresh read; nothing is
 * written over a newer status. The written object is returned, so a reconcile
 * that writes twice (a new ciphertext, then its condition) decides the second
 * write on the first one's result.
 *
 * Writes nothing when only the conditions' lastTransitionTime would change.
 */
export async function writeStatus<
  S extends { conditions?: Condition[] },
  T extends KubeObject & { status?: S },
>(client: KubeClient, path: string, object: T, next: S): Promise<T> {
  if (isDeepStrictEqual(withoutTimes(next), withoutTimes(object.status ?? {}))) return object;
  return client.mergePatch<T>(`${path}/status`, {
    metadata: { resourceVersion: object.metadata.resourceVersion },
    status: next,
  });
}

function withoutTimes(status: { conditions?: Condition[] }): unknown {
  return {
    ...status,
    conditions: status.conditions?.map(({ lastTransitionTime: _t, ...rest }) => rest),
  };
}

/** The Ready=False condition both controllers report for a wait or retry outcome. */
export function notReadyCondition(
  outcome: NotReadyOutcome,
  observedGeneration: number | undefined,
): Omit<Condition, 'lastTransitionTime'> {
  return {
    type: ConditionType.Ready,
    status: 'False',
    reason: outcome.reason,
    message: outcome.message,
    observedGeneration,
  };
}

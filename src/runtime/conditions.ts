import type { Condition } from '../api/types';

/**
 * Sets a condition in place of the one of the same type. lastTransitionTime moves
 * only when the status changes, as in metav1.Condition.
 */
export function setCondition(
  conditions: Condition[] | undefined,
  next: Omit<Condition, 'lastTransitionTime'>,
  now: Date = new Date(),
): Condition[] {
  const list = conditions ?? [];
  const previous = list.find((c) => c.type === next.type);
  const lastTransitionTime =
    previous && previous.status === next.status
      ? previous.lastTransitionTime
      : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return [...list.filter((c) => c.type !== next.type), { ...next, lastTransitionTime }];
}

export function findCondition(
  conditions: Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

import {
  ANNOTATION_INJECT,
  ANNOTATION_RESTART_ON_REGENERATE,
  ANNOTATION_RESTARTED_AT,
  ANNOTATION_RESTARTED_FOR,
} from '../api/types';
import type { KubeObject } from '../runtime/kube-client';

/**
 * The workload restarts' decisions, as pure functions: which Deployments,
 * StatefulSets and DaemonSets to roll after a DataKey regenerated, and the one
 * patch that rolls a workload and records why.
 */

export const WORKLOAD_KINDS = [
  { kind: 'Deployment', plural: 'deployments' },
  { kind: 'StatefulSet', plural: 'statefulsets' },
  { kind: 'DaemonSet', plural: 'daemonsets' },
] as const;

export type Workload = KubeObject & {
  spec?: { template?: { metadata?: { annotations?: Record<string, string> } } };
};

/** The DataKey generations a workload was rolled for, read from its own annotation (never through a prototype). */
export function restartedFor(workload: Workload): Map<string, number> {
  const out = new Map<string, number>();
  try {
    const parsed: unknown = JSON.parse(
      workload.metadata.annotations?.[ANNOTATION_RESTARTED_FOR] ?? '{}',
    );
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return out;
    for (const [name, generation] of Object.entries(parsed)) {
      if (Number.isSafeInteger(generation)) out.set(name, generation as number);
    }
  } catch {
    // A malformed record reads as none: the creation time decides.
  }
  return out;
}

/**
 * Whether to roll the workload for `generation` of DataKey `name`: its pod
 * template asks for the DataKey and opts in, and it was neither rolled for this
 * generation (or a later one) nor created after the generation was made (its
 * pods fetched it already). At most once per regeneration: the record is written
 * in the same patch as the roll.
 */
export function needsRestart(
  workload: Workload,
  name: string,
  generation: number,
  generationCreated: string,
): boolean {
  const template = workload.spec?.template?.metadata?.annotations ?? {};
  if (template[ANNOTATION_RESTART_ON_REGENERATE] !== 'true') return false;
  const asked = (template[ANNOTATION_INJECT] ?? '').split(',').map((n) => n.trim());
  if (!asked.includes(name)) return false;
  const rolled = restartedFor(workload).get(name);
  if (rolled !== undefined) return rolled < generation;
  const created = Date.parse(workload.metadata.creationTimestamp ?? '');
  return Number.isNaN(created) || created < Date.parse(generationCreated);
}

/** The merge patch that rolls the workload and records the generation, guarded by its resourceVersion. */
export function restartPatch(
  workload: Workload,
  name: string,
  generation: number,
  now: Date,
): Record<string, unknown> {
  const record = Object.fromEntries(restartedFor(workload));
  record[name] = generation;
  return {
    metadata: {
      resourceVersion: workload.metadata.resourceVersion,
      annotations: { [ANNOTATION_RESTARTED_FOR]: JSON.stringify(record) },
    },
    spec: {
      template: { metadata: { annotations: { [ANNOTATION_RESTARTED_AT]: now.toISOString() } } },
    },
  };
}

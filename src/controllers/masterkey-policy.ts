import { ConditionType } from '../api/conditions';
import { ANNOTATION_ROTATE, type DataKey, type MasterKey } from '../api/types';
import { parseDuration } from '../common/duration';
import type { KeyMetadata } from '../kms';
import { findCondition } from '../runtime/conditions';

/**
 * The MasterKey controller's decisions, as pure functions over what it observed
 * (cert-manager's "policies"): no API calls, no core calls, tested on fixtures.
 */

/** Timers are capped (setTimeout's limit is ~24.8 days); a long wait is re-checked daily. */
export const MAX_TIMER_MS = 24 * 3600_000;

export interface RewrapProgress {
  rewrapped: number;
  total: number;
}

/** The rotate annotation's value when it has not been acted on yet. */
export function rotationRequested(masterKey: MasterKey): string | undefined {
  const wanted = masterKey.metadata.annotations?.[ANNOTATION_ROTATE];
  return wanted && wanted !== masterKey.status?.rotateAnnotationSeen ? wanted : undefined;
}

/** Whether the core's rotation policy differs from the spec's. */
export function rotationPolicyDiffers(masterKey: MasterKey, meta: KeyMetadata): boolean {
  const automatic = masterKey.spec.rotation?.automatic ?? false;
  const interval = masterKey.spec.rotation?.interval;
  const currentSeconds = meta.rotationInterval
    ? Number(meta.rotationInterval.slice(0, -1))
    : undefined;
  return (
    automatic !== (meta.automaticRotation !== 'Disabled') ||
    (interval !== undefined &&
      parseDuration(interval, { minSeconds: 1, maxSeconds: Infinity }) !== currentSeconds)
  );
}

/** The state to reach: enable, disable, or leave the key as it is. */
export function enabledChange(
  masterKey: MasterKey,
  meta: KeyMetadata,
): 'enable' | 'disable' | undefined {
  const wantEnabled = masterKey.spec.enabled !== false;
  if (wantEnabled && meta.keyState === 'Disabled') return 'enable';
  if (!wantEnabled && meta.keyState === 'Enabled') return 'disable';
  return undefined;
}

/** The aliases to delete and to create so the key has exactly the spec's. */
export function aliasChanges(
  masterKey: MasterKey,
  current: string[],
): { remove: string[]; add: string[] } {
  const wanted = new Set(masterKey.spec.aliases ?? []);
  const have = new Set(current);
  return {
    remove: current.filter((a) => !wanted.has(a)),
    add: [...wanted].filter((a) => !have.has(a)),
  };
}

export function rewrapProgress(
  name: string,
  dataKeys: DataKey[],
  primaryKeyVersion: string,
): RewrapProgress {
  const mine = dataKeys.filter((dk) => dk.spec.masterKeyRef.name === name);
  const rewrapped = mine.filter((dk) => dk.status?.keyVersionId === primaryKeyVersion).length;
  return { rewrapped, total: mine.length };
}

/** Progress is re-read every second while a re-wrap runs; otherwise at the next rotation date. */
export function nextCheckMs(meta: KeyMetadata, progress: RewrapProgress, now: number): number {
  if (progress.rewrapped < progress.total) return 1000;
  const next = meta.nextRotationDate ? Date.parse(meta.nextRotationDate) - now : MAX_TIMER_MS;
  return Math.max(500, Math.min(next + 500, MAX_TIMER_MS));
}

/** The DataKeys that keep a MasterKey from being deleted, as namespace/name, sorted. */
export function deletionBlockers(name: string, dataKeys: DataKey[]): string[] {
  return dataKeys
    .filter((dk) => dk.spec.masterKeyRef.name === name)
    .map((dk) => `${dk.metadata.namespace}/${dk.metadata.name}`)
    .sort();
}

/** Rotation progress updates do not concern the DataKeys; key, version, state and spec do. */
export function mattersToDataKeys(old: MasterKey, mk: MasterKey): boolean {
  const ready = (m: MasterKey) => findCondition(m.status?.conditions, ConditionType.Ready)?.status;
  return (
    old.metadata.generation !== mk.metadata.generation ||
    old.status?.keyId !== mk.status?.keyId ||
    old.status?.primaryKeyVersion !== mk.status?.primaryKeyVersion ||
    ready(old) !== ready(mk) ||
    Boolean(old.metadata.deletionTimestamp) !== Boolean(mk.metadata.deletionTimestamp)
  );
}

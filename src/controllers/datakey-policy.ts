import { isDeepStrictEqual } from 'node:util';
import { ConditionType, DataKeyReason } from '../api/conditions';
import { DEFAULT_KEEP_PREVIOUS, MAX_ROTATION_SECONDS } from '../api/crds';
import {
  ANNOTATION_REGENERATE,
  LABEL_DATAKEY,
  LABEL_LAYOUT,
  SECRET_LAYOUT,
  type DataKey,
  type Flow,
  type MasterKey,
} from '../api/types';
import { parseDuration } from '../common/duration';
import type { SecretObject, WrappedGeneration } from '../datakey';
import { DATA_KEY_SPEC_BYTES } from '../kms';
import { findCondition } from '../runtime/conditions';
import type { NotReadyOutcome } from '../runtime/outcome';

/**
 * The DataKey controller's decisions, as pure functions over what it observed
 * (cert-manager's "policies"): no API calls, no core calls, tested on fixtures.
 */

/** Waiting on something outside this DataKey: retried on a slow timer and on MasterKey events. */
export const WAIT_MS = 30_000;

/** Why the DataKey cannot proceed with this MasterKey, or undefined when it can. */
export function masterKeyBlocks(
  dataKey: DataKey,
  masterKey: MasterKey | undefined,
): NotReadyOutcome | undefined {
  const name = dataKey.spec.masterKeyRef.name;
  const wait = (reason: string, message: string): NotReadyOutcome => ({
    kind: 'wait',
    reason,
    message,
    delayMs: WAIT_MS,
  });
  if (!masterKey || masterKey.metadata.deletionTimestamp) {
    return wait(DataKeyReason.MasterKeyNotFound, `MasterKey ${name} does not exist`);
  }
  if (masterKey.spec.enabled === false) {
    return wait(DataKeyReason.MasterKeyDisabled, `MasterKey ${name} is disabled`);
  }
  if (
    !masterKey.status?.keyId ||
    findCondition(masterKey.status.conditions, ConditionType.Ready)?.status !== 'True'
  ) {
    return wait(DataKeyReason.MasterKeyNotReady, `MasterKey ${name} is not Ready yet`);
  }
  return undefined;
}

/** Whether the Secret's controller reference names this DataKey. */
export function isOwnedBy(secret: SecretObject, dataKey: DataKey): boolean {
  const owners = (secret.metadata.ownerReferences ?? []) as {
    uid?: string;
    controller?: boolean;
  }[];
  return owners.some((o) => o.controller === true && o.uid === dataKey.metadata.uid);
}

/**
 * The stored copies of every generation, grouped by generation number
 * (ascending), each group in the order its copies are tried: copies under the
 * primary version first (a re-wrap interrupted after its status write), then the
 * Secret's (when the DataKey owns it), then the status copy; identical copies once.
 *
 * The union of both copies is what exists. Status is always written before the
 * Secret (a new generation, a re-wrap, a drop), so after a crash the status may
 * hold a generation the Secret lacks: it is kept and the Secret catches up. A
 * Secret holding one the status lacks (a status restored from an old backup) is
 * kept the same way. Nothing is generated twice: the regeneration decision reads
 * the merged generations, and the status write that records a new generation
 * carries the resourceVersion it was decided on.
 */
export function candidatesByGeneration(
  copies: { secret: WrappedGeneration[]; status: WrappedGeneration[] },
  primaryKeyVersion: string,
): WrappedGeneration[][] {
  const onPrimary = (c: WrappedGeneration) => Number(c.keyVersionId === primaryKeyVersion);
  const groups = new Map<number, WrappedGeneration[]>();
  for (const copy of [...copies.secret, ...copies.status]) {
    const group = groups.get(copy.generation) ?? [];
    if (!group.some((c) => c.ciphertextBlob.equals(copy.ciphertextBlob))) group.push(copy);
    groups.set(copy.generation, group);
  }
  return [...groups.entries()]
    .sort(([a], [b]) => a - b)
    .map(([, group]) => group.sort((a, b) => onPrimary(b) - onPrimary(a)));
}

/** How many generations before the current one are kept (spec, default 1). */
export const keepPreviousOf = (dataKey: DataKey): number =>
  dataKey.spec.regeneration?.keepPrevious ?? DEFAULT_KEEP_PREVIOUS;

/** The newest `keepPrevious + 1` generations, ascending: older ones are dropped, oldest first. */
export function keptGenerations(
  generations: WrappedGeneration[],
  keepPrevious: number,
): WrappedGeneration[] {
  const sorted = [...generations].sort((a, b) => a.generation - b.generation);
  return sorted.slice(Math.max(0, sorted.length - (keepPrevious + 1)));
}

/** A new generation's number: one past every number ever seen in either copy. */
export const nextGenerationNumber = (known: number[]): number => Math.max(0, ...known) + 1;

/** Kept generations are re-wrapped when any of them is under another version than the primary. */
export const needsRewrap = (generations: WrappedGeneration[], primaryKeyVersion: string) =>
  generations.some((g) => g.keyVersionId !== primaryKeyVersion);

/** The regeneration interval in seconds; undefined without one (or one below the minimum). */
export function regenerationSeconds(dataKey: DataKey, minSeconds: number): number | undefined {
  const interval = dataKey.spec.regeneration?.interval;
  return interval === undefined
    ? undefined
    : parseDuration(interval, { minSeconds, maxSeconds: MAX_ROTATION_SECONDS });
}

/** When the current generation is due to be replaced, from its creation time; undefined without an interval. */
export function nextRegenerationTime(
  dataKey: DataKey,
  current: WrappedGeneration,
  minSeconds: number,
): string | undefined {
  const seconds = regenerationSeconds(dataKey, minSeconds);
  if (seconds === undefined) return undefined;
  return new Date(Date.parse(current.creationTime) + seconds * 1000).toISOString();
}

/** Why a new generation is due now: an unseen regenerate token, the schedule, or both. */
export interface RegenerationDue {
  token?: string;
  scheduled: boolean;
}

/**
 * Whether to regenerate. A token is acted on once: it is recorded in
 * regenerateTokensSeen in the same status write as the generation it made. The
 * schedule counts from the current generation's creation time, which that same
 * write moves forward: so a crash anywhere yields one generation per token or tick.
 */
export function regenerationDue(
  dataKey: DataKey,
  current: WrappedGeneration,
  now: number,
  minSeconds: number,
): RegenerationDue | undefined {
  const wanted = dataKey.metadata.annotations?.[ANNOTATION_REGENERATE];
  const token =
    wanted && !(dataKey.status?.regenerateTokensSeen ?? []).includes(wanted) ? wanted : undefined;
  const next = nextRegenerationTime(dataKey, current, minSeconds);
  const scheduled = next !== undefined && Date.parse(next) <= now;
  return token || scheduled ? { token, scheduled } : undefined;
}

export const MAX_TOKENS_SEEN = 16;

/** The tokens acted on, with `token` added: the last 16, oldest dropped first. */
export function tokensSeenWith(seen: string[] | undefined, token: string | undefined): string[] {
  const all = [...(seen ?? [])];
  if (token && !all.includes(token)) all.push(token);
  return all.slice(-MAX_TOKENS_SEEN);
}

/** A rotated master key must use the Advance flow, or rotation would not take effect. */
export const generationFlow = (masterKeyHasRotated: boolean): Flow =>
  masterKeyHasRotated ? 'Advance' : 'Standard';

/** numberOfBytes wins over keySpec. */
export const dataKeyBytes = (dataKey: DataKey): number =>
  dataKey.spec.numberOfBytes ?? DATA_KEY_SPEC_BYTES[dataKey.spec.keySpec ?? 'AES_256'];

/**
 * What to do with the Secret, given the one read before the write and the
 * manifest of the current data key:
 * - `refuse`: a Secret of that name the DataKey does not own is never touched;
 * - `none`: it already matches;
 * - `create` / `replace`, with `restored` when the generations did not change in
 *   this reconcile and the Secret was not merely behind (an interrupted write, the
 *   first layout): it had been deleted or edited (a SecretRestored event).
 */
/**
 * Whether a Secret that differs from the manifest is merely behind (no restore
 * event): every generation in it opened, its label is intact, and it is either
 * of the first layout (rewritten to layout 2) or a consistent layout-2 Secret of
 * an earlier state (a write interrupted after the status write).
 */
export function secretIsBehind(
  dataKey: DataKey,
  secret: SecretObject | undefined,
  rebuilt: Record<string, string>,
  everyGenerationOpened: boolean,
): boolean {
  if (!secret?.data || !everyGenerationOpened) return false;
  if (secret.metadata.labels?.[LABEL_DATAKEY] !== dataKey.metadata.name) return false;
  if (!secret.data.generations) return true;
  return (
    secret.metadata.labels?.[LABEL_LAYOUT] === SECRET_LAYOUT &&
    isDeepStrictEqual(secret.data, rebuilt)
  );
}

export type SecretAction =
  | { action: 'refuse'; outcome: NotReadyOutcome }
  | { action: 'none' }
  | { action: 'create' | 'replace'; restored: boolean };

export function secretAction(
  dataKey: DataKey,
  secret: SecretObject | undefined,
  manifest: {
    type: string;
    data: Record<string, string>;
    metadata: { labels: Record<string, string> };
  },
  keyChanged: boolean,
  secretBehind = false,
): SecretAction {
  if (!secret) return { action: 'create', restored: !keyChanged };
  if (!isOwnedBy(secret, dataKey)) {
    return {
      action: 'refuse',
      outcome: {
        kind: 'wait',
        reason: DataKeyReason.SecretConflict,
        message: `Secret ${secret.metadata.name} exists and is not owned by this DataKey; it is left untouched`,
        delayMs: WAIT_MS,
      },
    };
  }
  const matches =
    secret.type === manifest.type &&
    secret.metadata.labels?.[LABEL_DATAKEY] === dataKey.metadata.name &&
    secret.metadata.labels?.[LABEL_LAYOUT] === manifest.metadata.labels[LABEL_LAYOUT] &&
    isDeepStrictEqual(secret.data, manifest.data);
  if (matches) return { action: 'none' };
  return { action: 'replace', restored: !keyChanged && !secretBehind };
}

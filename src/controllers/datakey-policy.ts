import { isDeepStrictEqual } from 'node:util';
import { ConditionType, DataKeyReason } from '../api/conditions';
import { LABEL_DATAKEY, type DataKey, type Flow, type MasterKey } from '../api/types';
import type { SecretObject, WrappedDataKey } from '../datakey';
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
 * The stored copies to try, in the order they win: the Secret's (when the
 * DataKey owns it) and the status copy; after a crash mid re-wrap the status
 * copy may be newer than the Secret, so copies under the primary version come first.
 */
export function storedCopiesInOrder(
  copies: { secret?: WrappedDataKey; status?: WrappedDataKey },
  primaryKeyVersion: string,
): WrappedDataKey[] {
  const candidates = [copies.secret, copies.status].filter(
    (c): c is WrappedDataKey => c !== undefined,
  );
  const onPrimary = (c: WrappedDataKey) => Number(c.keyVersionId === primaryKeyVersion);
  return candidates.sort((a, b) => onPrimary(b) - onPrimary(a));
}

/** A data key is re-wrapped when it was found (not just generated) under another version. */
export const needsRewrap = (
  wrapped: WrappedDataKey,
  generated: boolean,
  primaryKeyVersion: string,
) => !generated && wrapped.keyVersionId !== primaryKeyVersion;

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
 * - `create` / `replace`, with `restored` when the data key did not change in
 *   this reconcile, so the Secret had been deleted or edited (a SecretRestored event).
 */
export type SecretAction =
  | { action: 'refuse'; outcome: NotReadyOutcome }
  | { action: 'none' }
  | { action: 'create' | 'replace'; restored: boolean };

export function secretAction(
  dataKey: DataKey,
  secret: SecretObject | undefined,
  manifest: { type: string; data: Record<string, string> },
  keyChanged: boolean,
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
    isDeepStrictEqual(secret.data, manifest.data);
  if (matches) return { action: 'none' };
  return { action: 'replace', restored: !keyChanged };
}

import { ConditionType, MasterKeyEvent, MasterKeyReason } from '../api/conditions';
import { masterKeysPath } from '../api/paths';
import {
  ANNOTATION_ROTATE,
  type Condition,
  type MasterKey,
  type MasterKeyStatus,
} from '../api/types';
import type { DataKeyObject } from '../datakey';
import { KmsError, type KeyMetadata } from '../kms';
import { setCondition } from '../runtime/conditions';
import type { KubeObject } from '../runtime/kube-client';
import type { ManagedController, Watch } from '../runtime/manager';
import { NotReady, ready, type ReconcileOutcome } from '../runtime/outcome';
import { kmsCall, type ControllerContext } from './context';
import {
  aliasChanges,
  deletionBlockers,
  enabledChange,
  nextCheckMs,
  rewrapProgress,
  rotationPolicyDiffers,
  rotationRequested,
  type RewrapProgress,
} from './masterkey-policy';
import { notReadyCondition, writeStatus } from './status';

export const MASTERKEY_FINALIZER = 'kms.datakey.io/masterkey-protection';
/** Deleting a MasterKey schedules the key's deletion with this window, never destroys at once. */
export const DELETION_WINDOW_DAYS = 7;

type MasterKeyObject = MasterKey & KubeObject;
const KEY_STORE_WAIT_MS = 30_000;

/**
 * MasterKey: keeps a key in the core in step with the spec (enabled state,
 * aliases, rotation policy) and reports it in status. The key id is the
 * MasterKey's UID, so creation is idempotent across crashes.
 */
export class MasterKeyController implements ManagedController {
  readonly name = 'masterkey';
  readonly watches: ReturnType<typeof masterKeyWatches>;

  constructor(private readonly ctx: ControllerContext) {
    this.watches = masterKeyWatches(ctx);
  }

  allKeys(): string[] {
    return this.ctx.masterKeys.list().map((mk) => mk.metadata.name);
  }

  async reconcile(name: string): Promise<ReconcileOutcome> {
    const masterKey = this.ctx.masterKeys.get(name);
    if (!masterKey) return ready();
    if (masterKey.metadata.deletionTimestamp) return this.finalize(masterKey);
    if (!(masterKey.metadata.finalizers ?? []).includes(MASTERKEY_FINALIZER)) {
      await this.ctx.client.mergePatch(masterKeysPath(name), {
        metadata: {
          resourceVersion: masterKey.metadata.resourceVersion,
          finalizers: [...(masterKey.metadata.finalizers ?? []), MASTERKEY_FINALIZER],
        },
      });
      return ready(); // the update comes back through the informer
    }
    try {
      let meta = await this.syncKey(masterKey);
      if (await this.rotate(masterKey, meta.keyId)) meta = this.ctx.core.describeKey(meta.keyId);
      const progress = rewrapProgress(name, this.ctx.dataKeys.list(), meta.primaryKeyVersion);
      await this.writeStatus(
        masterKey,
        meta,
        {
          type: ConditionType.Ready,
          status: 'True',
          reason:
            meta.keyState === 'Enabled' ? MasterKeyReason.KeyEnabled : MasterKeyReason.KeyDisabled,
          message: `Key ${meta.keyId} is ${meta.keyState.toLowerCase()}, primary version ${meta.primaryKeyVersion}`,
          observedGeneration: masterKey.metadata.generation,
        },
        progress,
      );
      return ready(nextCheckMs(meta, progress, Date.now()));
    } catch (err) {
      const notReady =
        err instanceof KmsError
          ? NotReady.retry(MasterKeyReason.KMSError, `${err.code}: ${err.message}`)
          : err;
      if (!(notReady instanceof NotReady)) throw err;
      await this.writeStatus(
        masterKey,
        undefined,
        notReadyCondition(notReady.outcome, masterKey.metadata.generation),
      );
      return notReady.outcome;
    }
  }

  private async syncKey(masterKey: MasterKeyObject): Promise<KeyMetadata> {
    const { spec } = masterKey;
    const core = this.ctx.core;
    // A key this MasterKey already had and the store lost is restored, never made anew:
    // a new key under the same id would not open any data key wrapped by the old one.
    const known = masterKey.status?.keyId;
    if (known && !core.hasKey(known)) {
      // Looked at again when the operator sees the store put back (and on a slow timer).
      throw NotReady.wait(
        MasterKeyReason.KeyMissingFromStore,
        `Key ${known} is missing from the key store: restore it from a backup (it is never created again)`,
        KEY_STORE_WAIT_MS,
      );
    }
    let meta = await kmsCall(this.ctx, 'CreateKey', () =>
      core.createKey({
        keyId: masterKey.metadata.uid,
        keySpec: spec.keySpec ?? 'Aliyun_AES_256',
        description: spec.description ?? `MasterKey ${masterKey.metadata.name}`,
      }),
    );
    const keyId = meta.keyId;
    const change = enabledChange(masterKey, meta);
    if (change === 'enable') {
      meta = await kmsCall(this.ctx, 'EnableKey', () => core.enableKey(keyId));
      this.ctx.events.record(
        masterKey,
        'Normal',
        MasterKeyEvent.KeyEnabled,
        `Key ${keyId} enabled`,
      );
    } else if (change === 'disable') {
      meta = await kmsCall(this.ctx, 'DisableKey', () => core.disableKey(keyId));
      this.ctx.events.record(
        masterKey,
        'Normal',
        MasterKeyEvent.KeyDisabled,
        `Key ${keyId} disabled`,
      );
    }
    if (rotationPolicyDiffers(masterKey, meta)) {
      meta = await kmsCall(this.ctx, 'UpdateRotationPolicy', () =>
        core.updateRotationPolicy(
          keyId,
          spec.rotation?.automatic ?? false,
          spec.rotation?.interval,
        ),
      );
    }
    await this.syncAliases(masterKey, keyId);
    return meta;
  }

  /**
   * Rotates when the rotate annotation holds a value not acted on yet (exactly once
   * per distinct value: the value is the rotation token in the core), or when
   * automatic rotation is due.
   */
  private async rotate(masterKey: MasterKeyObject, keyId: string): Promise<boolean> {
    const core = this.ctx.core;
    const wanted = rotationRequested(masterKey);
    let rotated = false;
    if (wanted) {
      const versionCount = () =>
        core.listKeyVersions(keyId, { pageNumber: 1, pageSize: 1 }).totalCount;
      const before = versionCount();
      const version = await kmsCall(this.ctx, 'CreateKeyVersion', () =>
        core.createKeyVersion(keyId, `${masterKey.metadata.uid}:${wanted}`),
      );
      // A retry after a crash finds the version this value already made.
      if (versionCount() > before) {
        rotated = true;
        this.ctx.metrics.rotations.inc({ trigger: 'annotation' });
        this.ctx.events.record(
          masterKey,
          'Normal',
          MasterKeyEvent.KeyRotated,
          `Rotated on request (${ANNOTATION_ROTATE}=${wanted}): primary version ${version.keyVersionId}`,
        );
      }
    }
    if (await kmsCall(this.ctx, 'RotateIfDue', () => core.rotateIfDue(keyId))) {
      rotated = true;
      this.ctx.metrics.rotations.inc({ trigger: 'schedule' });
      const primary = core.describeKey(keyId).primaryKeyVersion;
      this.ctx.events.record(
        masterKey,
        'Normal',
        MasterKeyEvent.KeyRotated,
        `Rotated on schedule: primary version ${primary}`,
      );
    }
    return rotated;
  }

  private async syncAliases(masterKey: MasterKeyObject, keyId: string): Promise<void> {
    const core = this.ctx.core;
    const current = core.listAliasesByKeyId(keyId, { pageNumber: 1, pageSize: 100 }).aliases;
    const { remove, add } = aliasChanges(
      masterKey,
      current.map((a) => a.aliasName),
    );
    for (const aliasName of remove) {
      await kmsCall(this.ctx, 'DeleteAlias', () => core.deleteAlias(aliasName));
    }
    for (const aliasName of add) {
      try {
        await kmsCall(this.ctx, 'CreateAlias', () => core.createAlias(aliasName, keyId));
      } catch (err) {
        if (err instanceof KmsError && err.code === 'Forbidden.AliasExists') {
          throw NotReady.retry(
            MasterKeyReason.AliasConflict,
            `alias ${aliasName} already names another key`,
          );
        }
        throw err;
      }
    }
  }

  private async finalize(masterKey: MasterKeyObject): Promise<ReconcileOutcome> {
    const name = masterKey.metadata.name;
    const users = deletionBlockers(name, this.ctx.dataKeys.list());
    if (users.length > 0) {
      const shown =
        users.slice(0, 10).join(', ') +
        (users.length > 10 ? `, and ${users.length - 10} more` : '');
      await this.writeStatus(masterKey, undefined, {
        type: ConditionType.Ready,
        status: 'False',
        reason: MasterKeyReason.DeletionBlocked,
        message: `deletion waits until no DataKey references this MasterKey: ${shown}`,
        observedGeneration: masterKey.metadata.generation,
      });
      return ready(); // DataKey deletions enqueue this MasterKey again
    }
    const keyId = masterKey.status?.keyId;
    if (keyId) {
      try {
        const meta = this.ctx.core.describeKey(keyId);
        // Aliases are names users reuse: release them so a new MasterKey can take them.
        for (const alias of this.ctx.core.listAliasesByKeyId(keyId, {
          pageNumber: 1,
          pageSize: 100,
        }).aliases) {
          await kmsCall(this.ctx, 'DeleteAlias', () => this.ctx.core.deleteAlias(alias.aliasName));
        }
        if (meta.keyState !== 'PendingDeletion') {
          await kmsCall(this.ctx, 'ScheduleKeyDeletion', () =>
            this.ctx.core.scheduleKeyDeletion(keyId, DELETION_WINDOW_DAYS),
          );
          this.ctx.events.record(
            masterKey,
            'Normal',
            MasterKeyEvent.KeyDeletionScheduled,
            `Key ${keyId} is scheduled for deletion in ${DELETION_WINDOW_DAYS} days`,
          );
        }
      } catch (err) {
        if (!(err instanceof KmsError && err.code === 'Forbidden.KeyNotFound')) throw err;
      }
    }
    await this.ctx.client.mergePatch(masterKeysPath(name), {
      metadata: {
        resourceVersion: masterKey.metadata.resourceVersion,
        finalizers: (masterKey.metadata.finalizers ?? []).filter((f) => f !== MASTERKEY_FINALIZER),
      },
    });
    return ready();
  }

  private async writeStatus(
    masterKey: MasterKeyObject,
    meta: KeyMetadata | undefined,
    readyCondition: Omit<Condition, 'lastTransitionTime'>,
    progress?: RewrapProgress,
  ): Promise<void> {
    const current = masterKey.status ?? {};
    const next: MasterKeyStatus = { ...current, observedGeneration: masterKey.metadata.generation };
    const rotateValue = masterKey.metadata.annotations?.[ANNOTATION_ROTATE];
    if (meta && rotateValue) next.rotateAnnotationSeen = rotateValue;
    if (progress) {
      next.rotation = progress;
      const rotating = progress.rewrapped < progress.total;
      next.conditions = setCondition(current.conditions, {
        type: ConditionType.Rotating,
        status: rotating ? 'True' : 'False',
        reason: rotating ? MasterKeyReason.Rewrapping : MasterKeyReason.Idle,
        message: `${progress.rewrapped} of ${progress.total} DataKeys are on the primary version`,
        observedGeneration: masterKey.metadata.generation,
      });
    }
    if (meta) {
      const versions = this.ctx.core.listKeyVersions(meta.keyId, { pageNumber: 1, pageSize: 100 });
      next.keyId = meta.keyId;
      next.primaryKeyVersion = meta.primaryKeyVersion;
      next.keyVersions = versions.versions.map((v) => ({
        keyVersionId: v.keyVersionId,
        creationDate: v.creationDate,
      }));
      next.lastRotationDate = meta.lastRotationDate;
      next.nextRotationDate = meta.nextRotationDate;
    }
    next.conditions = setCondition(next.conditions ?? current.conditions, readyCondition);
    await writeStatus(this.ctx.client, masterKeysPath(masterKey.metadata.name), masterKey, next);
  }
}

/** What wakes the MasterKey controller: its MasterKeys, and a deleted DataKey (it may unblock a deletion). */
export function masterKeyWatches(
  ctx: ControllerContext,
): [Watch<MasterKeyObject>, Watch<DataKeyObject>] {
  return [
    { informer: ctx.masterKeys, keysFor: (_event, mk) => [mk.metadata.name] },
    {
      informer: ctx.dataKeys,
      keysFor: (event, dk) => (event === 'delete' ? [dk.spec.masterKeyRef.name] : []),
    },
  ];
}

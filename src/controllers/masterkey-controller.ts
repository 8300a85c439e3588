import { isDeepStrictEqual } from 'node:util';
import {
  ANNOTATION_ROTATE,
  type Condition,
  type MasterKey,
  type MasterKeyStatus,
} from '../api/types';
import { KmsError, type KeyMetadata } from '../kms';
import { parseRotationInterval } from '../kms/validate';
import type { KubeObject } from '../runtime/kube-client';
import type { ReconcileResult } from '../runtime/workqueue';
import { setCondition } from './conditions';
import { kmsCall, masterKeysPath, statusPatch, type ControllerContext } from './context';

export const MASTERKEY_FINALIZER = 'kms.datakey.io/masterkey-protection';
/** Deleting a MasterKey schedules the key's deletion with this window, never destroys at once. */
export const DELETION_WINDOW_DAYS = 7;
/** Timers are capped (setTimeout's limit is ~24.8 days); a long wait is re-checked daily. */
const MAX_TIMER_MS = 24 * 3600_000;

type MasterKeyObject = MasterKey & KubeObject;

class MasterKeyNotReady extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * MasterKey: keeps a key in the core in step with the spec (enabled state,
 * aliases, rotation policy) and reports it in status. The key id is the
 * MasterKey's UID, so creation is idempotent across crashes.
 */
export class MasterKeyController {
  constructor(private readonly ctx: ControllerContext) {}

  async reconcile(name: string): Promise<ReconcileResult | void> {
    const masterKey = this.ctx.masterKeys.get(name);
    if (!masterKey) return;
    if (masterKey.metadata.deletionTimestamp) return this.finalize(masterKey);
    if (!(masterKey.metadata.finalizers ?? []).includes(MASTERKEY_FINALIZER)) {
      await this.ctx.client.mergePatch(`${masterKeysPath()}/${name}`, {
        metadata: {
          resourceVersion: masterKey.metadata.resourceVersion,
          finalizers: [...(masterKey.metadata.finalizers ?? []), MASTERKEY_FINALIZER],
        },
      });
      return; // the update comes back through the informer
    }
    try {
      let meta = await this.syncKey(masterKey);
      const rotated = await this.rotate(masterKey, meta.keyId);
      if (rotated) meta = this.ctx.core.describeKey(meta.keyId);
      const progress = this.rewrapProgress(masterKey.metadata.name, meta.primaryKeyVersion);
      await this.writeStatus(
        masterKey,
        meta,
        {
          type: 'Ready',
          status: 'True',
          reason: meta.keyState === 'Enabled' ? 'KeyEnabled' : 'KeyDisabled',
          message: `Key ${meta.keyId} is ${meta.keyState.toLowerCase()}, primary version ${meta.primaryKeyVersion}`,
          observedGeneration: masterKey.metadata.generation,
        },
        progress,
      );
      return { requeueAfterMs: this.nextCheckMs(meta, progress) };
    } catch (err) {
      const reason =
        err instanceof MasterKeyNotReady
          ? err.reason
          : err instanceof KmsError
            ? 'KMSError'
            : undefined;
      if (!reason) throw err;
      const message =
        err instanceof KmsError ? `${err.code}: ${err.message}` : (err as Error).message;
      await this.writeStatus(masterKey, undefined, {
        type: 'Ready',
        status: 'False',
        reason,
        message,
        observedGeneration: masterKey.metadata.generation,
      });
      throw err;
    }
  }

  private async syncKey(masterKey: MasterKeyObject): Promise<KeyMetadata> {
    const { spec } = masterKey;
    const core = this.ctx.core;
    // A key this MasterKey already had and the store lost is restored, never made anew:
    // a new key under the same id would not open any data key wrapped by the old one.
    const known = masterKey.status?.keyId;
    if (known && !core.hasKey(known)) {
      throw new MasterKeyNotReady(
        'KeyMissingFromStore',
        `Key ${known} is missing from the key store: restore it from a backup (it is never created again)`,
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
    const wantEnabled = spec.enabled !== false;
    if (wantEnabled && meta.keyState === 'Disabled') {
      meta = await kmsCall(this.ctx, 'EnableKey', () => core.enableKey(keyId));
      this.ctx.events.record(masterKey, 'Normal', 'KeyEnabled', `Key ${keyId} enabled`);
    } else if (!wantEnabled && meta.keyState === 'Enabled') {
      meta = await kmsCall(this.ctx, 'DisableKey', () => core.disableKey(keyId));
      this.ctx.events.record(masterKey, 'Normal', 'KeyDisabled', `Key ${keyId} disabled`);
    }
    const automatic = spec.rotation?.automatic ?? false;
    const interval = spec.rotation?.interval;
    const currentSeconds = meta.rotationInterval
      ? Number(meta.rotationInterval.slice(0, -1))
      : undefined;
    if (
      automatic !== (meta.automaticRotation !== 'Disabled') ||
      (interval !== undefined && parseRotationInterval(interval, 1) !== currentSeconds)
    ) {
      meta = await kmsCall(this.ctx, 'UpdateRotationPolicy', () =>
        core.updateRotationPolicy(keyId, automatic, interval),
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
    const wanted = masterKey.metadata.annotations?.[ANNOTATION_ROTATE];
    let rotated = false;
    if (wanted && wanted !== masterKey.status?.rotateAnnotationSeen) {
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
          'KeyRotated',
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
        'KeyRotated',
        `Rotated on schedule: primary version ${primary}`,
      );
    }
    return rotated;
  }

  private rewrapProgress(name: string, primary: string): { rewrapped: number; total: number } {
    const mine = this.ctx.dataKeys.list().filter((dk) => dk.spec.masterKeyRef.name === name);
    const rewrapped = mine.filter((dk) => dk.status?.keyVersionId === primary).length;
    return { rewrapped, total: mine.length };
  }

  /** Progress is re-read every second while a re-wrap runs; otherwise at the next rotation date. */
  private nextCheckMs(meta: KeyMetadata, progress: { rewrapped: number; total: number }): number {
    if (progress.rewrapped < progress.total) return 1000;
    const next = meta.nextRotationDate
      ? Date.parse(meta.nextRotationDate) - Date.now()
      : MAX_TIMER_MS;
    return Math.max(500, Math.min(next + 500, MAX_TIMER_MS));
  }

  private async syncAliases(masterKey: MasterKeyObject, keyId: string): Promise<void> {
    const core = this.ctx.core;
    const wanted = new Set(masterKey.spec.aliases ?? []);
    const current = core.listAliasesByKeyId(keyId, { pageNumber: 1, pageSize: 100 }).aliases;
    for (const alias of current) {
      if (!wanted.has(alias.aliasName)) {
        await kmsCall(this.ctx, 'DeleteAlias', () => core.deleteAlias(alias.aliasName));
      }
    }
    const have = new Set(current.map((a) => a.aliasName));
    for (const aliasName of wanted) {
      if (have.has(aliasName)) continue;
      try {
        await kmsCall(this.ctx, 'CreateAlias', () => core.createAlias(aliasName, keyId));
      } catch (err) {
        if (err instanceof KmsError && err.code === 'Forbidden.AliasExists') {
          throw new MasterKeyNotReady(
            'AliasConflict',
            `alias ${aliasName} already names another key`,
          );
        }
        throw err;
      }
    }
  }

  private async finalize(masterKey: MasterKeyObject): Promise<ReconcileResult | void> {
    const name = masterKey.metadata.name;
    const users = this.ctx.dataKeys
      .list()
      .filter((dk) => dk.spec.masterKeyRef.name === name)
      .map((dk) => `${dk.metadata.namespace}/${dk.metadata.name}`)
      .sort();
    if (users.length > 0) {
      const shown =
        users.slice(0, 10).join(', ') +
        (users.length > 10 ? `, and ${users.length - 10} more` : '');
      await this.writeStatus(masterKey, undefined, {
        type: 'Ready',
        status: 'False',
        reason: 'DeletionBlocked',
        message: `deletion waits until no DataKey references this MasterKey: ${shown}`,
        observedGeneration: masterKey.metadata.generation,
      });
      return; // DataKey deletions enqueue this MasterKey again
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
            'KeyDeletionScheduled',
            `Key ${keyId} is scheduled for deletion in ${DELETION_WINDOW_DAYS} days`,
          );
        }
      } catch (err) {
        if (!(err instanceof KmsError && err.code === 'Forbidden.KeyNotFound')) throw err;
      }
    }
    await this.ctx.client.mergePatch(`${masterKeysPath()}/${name}`, {
      metadata: {
        resourceVersion: masterKey.metadata.resourceVersion,
        finalizers: (masterKey.metadata.finalizers ?? []).filter((f) => f !== MASTERKEY_FINALIZER),
      },
    });
  }

  private async writeStatus(
    masterKey: MasterKeyObject,
    meta: KeyMetadata | undefined,
    ready: Omit<Condition, 'lastTransitionTime'>,
    progress?: { rewrapped: number; total: number },
  ): Promise<void> {
    const current = masterKey.status ?? {};
    const next: MasterKeyStatus = { ...current, observedGeneration: masterKey.metadata.generation };
    const rotateValue = masterKey.metadata.annotations?.[ANNOTATION_ROTATE];
    if (meta && rotateValue) next.rotateAnnotationSeen = rotateValue;
    if (progress) {
      next.rotation = progress;
      const rotating = progress.rewrapped < progress.total;
      next.conditions = setCondition(current.conditions, {
        type: 'Rotating',
        status: rotating ? 'True' : 'False',
        reason: rotating ? 'Rewrapping' : 'Idle',
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
    next.conditions = setCondition(next.conditions ?? current.conditions, ready);
    const strip = (s: MasterKeyStatus) => ({
      ...s,
      conditions: s.conditions?.map(({ lastTransitionTime: _t, ...rest }) => rest),
    });
    if (isDeepStrictEqual(strip(next), strip(current))) return;
    await this.ctx.client.mergePatch(
      `${masterKeysPath()}/${masterKey.metadata.name}/status`,
      statusPatch(masterKey, next),
    );
  }
}

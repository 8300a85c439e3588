import { ConditionType, DataKeyEvent, DataKeyReason } from '../api/conditions';
import { dataKeysPath, secretsPath } from '../api/paths';
import {
  GROUP,
  LABEL_DATAKEY,
  type Condition,
  type DataKeyStatus,
  type MasterKey,
} from '../api/types';
import {
  boundAad,
  boundContext,
  openWrapped,
  secretManifest,
  secretNameOf,
  statusFields,
  wrappedFromSecret,
  wrappedFromStatus,
  type DataKeyObject,
  type SecretObject,
  type WrappedDataKey,
} from '../datakey';
import { KmsError, RateLimiter } from '../kms';
import { setCondition } from '../runtime/conditions';
import { keyOf } from '../runtime/informer';
import { isNotFound, type KubeObject } from '../runtime/kube-client';
import type { ManagedController, Watch } from '../runtime/manager';
import { NotReady, ready, type ReconcileOutcome } from '../runtime/outcome';
import { kmsCall, type ControllerContext } from './context';
import {
  dataKeyBytes,
  generationFlow,
  isOwnedBy,
  masterKeyBlocks,
  needsRewrap,
  secretAction,
  storedCopiesInOrder,
} from './datakey-policy';
import { mattersToDataKeys } from './masterkey-policy';
import { writeStatus } from './status';

export const DEFAULT_REWRAPS_PER_SECOND = 100;
const REWRAP_RETRY_MS = 200;

export interface DataKeyControllerOptions {
  /** Re-wraps per second after a rotation, across all DataKeys (0 = unlimited). */
  rewrapsPerSecond?: number;
}

/**
 * DataKey: makes sure a data key exists exactly once, wrapped by its MasterKey and
 * bound to the DataKey's identity, and that its Secret holds that ciphertext.
 * The plaintext is never requested: generation is *WithoutPlaintext.
 */
export class DataKeyController implements ManagedController {
  readonly name = 'datakey';
  readonly watches: ReturnType<typeof dataKeyWatches>;
  private readonly rewrapBudget: RateLimiter;

  constructor(
    private readonly ctx: ControllerContext,
    options: DataKeyControllerOptions = {},
  ) {
    this.rewrapBudget = new RateLimiter(options.rewrapsPerSecond ?? DEFAULT_REWRAPS_PER_SECOND);
    this.watches = dataKeyWatches(ctx);
  }

  allKeys(): string[] {
    return this.ctx.dataKeys.list().map(keyOf);
  }

  async reconcile(key: string): Promise<ReconcileOutcome> {
    let dataKey = this.ctx.dataKeys.get(key);
    if (!dataKey || dataKey.metadata.deletionTimestamp) return ready();
    try {
      const found = await this.ensureDataKey(dataKey);
      dataKey = found.dataKey;
      let { wrapped } = found;
      if (needsRewrap(wrapped, found.generated, this.primaryVersion(wrapped.keyId))) {
        if (!this.rewrapBudget.tryTake('rewrap', 'all')) return ready(REWRAP_RETRY_MS);
        ({ dataKey, wrapped } = await this.rewrap(dataKey, wrapped));
      }
      const keyChanged = found.generated || wrapped !== found.wrapped;
      await this.ensureSecret(dataKey, found.secret, wrapped, keyChanged);
      await this.writeReady(dataKey, wrapped, {
        type: ConditionType.Ready,
        status: 'True',
        reason: DataKeyReason.DataKeyReady,
        message: `Secret ${secretNameOf(dataKey)} holds the ciphertext (${wrapped.flow} flow)`,
        observedGeneration: dataKey.metadata.generation,
      });
      return ready();
    } catch (err) {
      if (!(err instanceof NotReady)) throw err;
      await this.writeReady(dataKey, undefined, {
        type: ConditionType.Ready,
        status: 'False',
        reason: err.outcome.reason,
        message: err.outcome.message,
        observedGeneration: dataKey.metadata.generation,
      });
      return err.outcome;
    }
  }

  /** The existing data key from any intact copy, or a new one only when none is left. */
  private async ensureDataKey(dataKey: DataKeyObject): Promise<{
    dataKey: DataKeyObject;
    wrapped: WrappedDataKey;
    generated: boolean;
    secret?: SecretObject;
  }> {
    const masterKey = this.ctx.masterKeys.get(dataKey.spec.masterKeyRef.name);
    const blocked = masterKeyBlocks(dataKey, masterKey);
    if (blocked) throw new NotReady(blocked);
    const keyId = (masterKey as MasterKey).status?.keyId as string;
    const secret = await this.readSecret(dataKey);
    const candidates = storedCopiesInOrder(
      {
        secret: secret && isOwnedBy(secret, dataKey) ? wrappedFromSecret(secret.data) : undefined,
        status: wrappedFromStatus(dataKey.status),
      },
      this.primaryVersion(keyId),
    );
    for (const candidate of candidates) {
      if (this.opens(dataKey, candidate))
        return { dataKey, wrapped: candidate, generated: false, secret };
    }
    if (candidates.length > 0) {
      this.ctx.events.record(
        dataKey,
        'Warning',
        DataKeyEvent.DataKeyReissued,
        'No stored copy of the ciphertext opens any more (tampered); a new data key is issued',
      );
    }
    return { ...(await this.generate(dataKey, keyId)), generated: true, secret };
  }

  /** Verifies a stored ciphertext inside the core; the plaintext is zeroed at once. */
  private opens(dataKey: DataKeyObject, wrapped: WrappedDataKey): boolean {
    try {
      openWrapped(this.ctx.core, dataKey, wrapped, this.ctx.metrics.kmsCalls).fill(0);
      return true;
    } catch (err) {
      if (err instanceof KmsError && err.code === 'InvalidParameter') return false;
      throw kmsNotReady(err);
    }
  }

  private async generate(
    dataKey: DataKeyObject,
    keyId: string,
  ): Promise<{ dataKey: DataKeyObject; wrapped: WrappedDataKey }> {
    const numberOfBytes = dataKeyBytes(dataKey);
    let wrapped: WrappedDataKey;
    try {
      if (generationFlow(this.hasRotated(keyId)) === 'Advance') {
        const sealed = kmsCall(this.ctx, 'AdvanceGenerateDataKeyWithoutPlaintext', () =>
          this.ctx.core.advanceGenerateDataKeyWithoutPlaintext({
            keyId,
            numberOfBytes,
            aad: boundAad(dataKey),
          }),
        );
        wrapped = { ...sealed, flow: 'Advance' };
      } else {
        const sealed = kmsCall(this.ctx, 'GenerateDataKeyWithoutPlaintext', () =>
          this.ctx.core.generateDataKeyWithoutPlaintext({
            keyId,
            numberOfBytes,
            encryptionContext: boundContext(dataKey),
          }),
        );
        wrapped = { ...sealed, flow: 'Standard' };
      }
    } catch (err) {
      throw kmsNotReady(err);
    }
    // The status copy is written first: if this fails, the key was never stored
    // anywhere and nothing is replaced.
    const written = await this.storeInStatus(dataKey, wrapped);
    this.ctx.events.record(
      dataKey,
      'Normal',
      DataKeyEvent.Generated,
      `Data key generated under key version ${wrapped.keyVersionId} (${wrapped.flow} flow)`,
    );
    return { dataKey: written, wrapped };
  }

  /**
   * Moves the data key to the primary version in the Advance flow, inside the
   * core (the plaintext never leaves it). The new ciphertext is stored in status
   * first; the Secret follows in one write.
   */
  private async rewrap(
    dataKey: DataKeyObject,
    wrapped: WrappedDataKey,
  ): Promise<{ dataKey: DataKeyObject; wrapped: WrappedDataKey }> {
    const started = performance.now();
    let rewrapped: WrappedDataKey;
    try {
      const sealed = kmsCall(this.ctx, 'RewrapToPrimary', () =>
        this.ctx.core.rewrapToPrimary({
          ciphertextBlob: wrapped.ciphertextBlob,
          // Standard blobs are bound to the canonical context, Advance blobs to the same bytes as Aad.
          sourceAad: boundAad(dataKey),
          destinationAad: boundAad(dataKey),
        }),
      );
      rewrapped = { ...sealed, flow: 'Advance' };
    } catch (err) {
      this.ctx.metrics.rewraps.inc({ result: 'error' });
      throw kmsNotReady(err);
    }
    const written = await this.storeInStatus(dataKey, rewrapped);
    this.ctx.metrics.rewraps.inc({ result: 'success' });
    this.ctx.metrics.rewrapSeconds.observe((performance.now() - started) / 1000);
    this.ctx.events.record(
      dataKey,
      'Normal',
      DataKeyEvent.Rewrapped,
      `Re-wrapped from key version ${wrapped.keyVersionId} (${wrapped.flow}) to the primary version ${rewrapped.keyVersionId} (Advance); the data key is unchanged`,
    );
    return { dataKey: written, wrapped: rewrapped };
  }

  private primaryVersion(keyId: string): string {
    return this.ctx.core.describeKey(keyId).primaryKeyVersion;
  }

  private hasRotated(keyId: string): boolean {
    const { versions } = this.ctx.core.listKeyVersions(keyId, { pageNumber: 1, pageSize: 2 });
    return versions.length > 1;
  }

  private async readSecret(dataKey: DataKeyObject): Promise<SecretObject | undefined> {
    const namespace = dataKey.metadata.namespace as string;
    const cached = this.ctx.secrets.get(`${namespace}/${secretNameOf(dataKey)}`);
    if (cached) return cached;
    // Not in the (label-selected) cache: it may still exist without our label.
    try {
      return await this.ctx.client.get<SecretObject>(secretsPath(namespace, secretNameOf(dataKey)));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * `readBefore` is what ensureDataKey read in this same reconcile. When the Secret
   * was absent there, it is not read again: the create below fails (409) if one
   * appeared since, and the reconcile is retried from a fresh read. An existing
   * Secret is read again before it is overwritten, as its owner may have changed.
   * `keyChanged`: the data key was just generated or re-wrapped, so a differing
   * Secret is expected (no SecretRestored event).
   */
  private async ensureSecret(
    dataKey: DataKeyObject,
    readBefore: SecretObject | undefined,
    wrapped: WrappedDataKey,
    keyChanged: boolean,
  ): Promise<void> {
    const namespace = dataKey.metadata.namespace as string;
    const name = secretNameOf(dataKey);
    const secret = readBefore && (await this.readSecret(dataKey));
    const manifest = secretManifest(dataKey, wrapped);
    const decision = secretAction(dataKey, secret, manifest, keyChanged);
    if (decision.action === 'refuse') throw new NotReady(decision.outcome);
    if (decision.action === 'none') return;
    if (decision.action === 'create' || !secret) {
      // A create fails (409) if a Secret appeared meanwhile: never a takeover.
      await this.ctx.client.create(secretsPath(namespace), manifest);
      if (decision.restored) this.secretRestored(dataKey, `Secret ${name} was missing`);
      return;
    }
    // One full replace (guarded by resourceVersion), not an apply: blob, version,
    // flow and the decryption fields change together, and keys another field
    // manager added would survive an apply, so the Secret would never match the layout.
    await this.ctx.client.replace(secretsPath(namespace, name), {
      ...manifest,
      metadata: {
        ...secret.metadata,
        labels: { ...secret.metadata.labels, ...manifest.metadata.labels },
        ownerReferences: manifest.metadata.ownerReferences,
        resourceVersion: secret.metadata.resourceVersion,
      },
    });
    if (decision.restored && !this.isOlderCopy(dataKey, secret, wrapped)) {
      this.secretRestored(dataKey, `Secret ${name} was changed`);
    }
  }

  private secretRestored(dataKey: DataKeyObject, what: string): void {
    this.ctx.events.record(
      dataKey,
      'Warning',
      DataKeyEvent.SecretRestored,
      `${what}; restored with the same data key`,
    );
  }

  /** The Secret still held the key under an older version (a re-wrap interrupted after its status write). */
  private isOlderCopy(
    dataKey: DataKeyObject,
    secret: SecretObject,
    wrapped: WrappedDataKey,
  ): boolean {
    const inSecret = wrappedFromSecret(secret.data);
    return (
      inSecret !== undefined &&
      inSecret.keyVersionId !== wrapped.keyVersionId &&
      this.opens(dataKey, inSecret)
    );
  }

  /** Stores a new ciphertext in status (its second copy) before the Secret is written. */
  private storeInStatus(dataKey: DataKeyObject, wrapped: WrappedDataKey): Promise<DataKeyObject> {
    return this.patchStatus(dataKey, { ...dataKey.status, ...statusFields(dataKey, wrapped) });
  }

  private writeReady(
    dataKey: DataKeyObject,
    wrapped: WrappedDataKey | undefined,
    condition: Omit<Condition, 'lastTransitionTime'>,
  ): Promise<DataKeyObject> {
    const current = dataKey.status ?? {};
    return this.patchStatus(dataKey, {
      ...current,
      ...(wrapped ? statusFields(dataKey, wrapped) : {}),
      observedGeneration: dataKey.metadata.generation,
      conditions: setCondition(current.conditions, condition),
    });
  }

  private patchStatus(dataKey: DataKeyObject, next: DataKeyStatus): Promise<DataKeyObject> {
    return writeStatus(
      this.ctx.client,
      dataKeysPath(dataKey.metadata.namespace, dataKey.metadata.name),
      dataKey,
      next,
    );
  }
}

function kmsNotReady(err: unknown): Error {
  if (!(err instanceof KmsError)) return err as Error;
  return NotReady.retry(DataKeyReason.KMSError, `${err.code}: ${err.message}`);
}

/**
 * What wakes the DataKey controller: its DataKeys; a MasterKey change that
 * matters to them (key, version, readiness, spec, deletion); a change of a
 * Secret it owns.
 */
export function dataKeyWatches(
  ctx: ControllerContext,
): [Watch<DataKeyObject>, Watch<MasterKey & KubeObject>, Watch<SecretObject>] {
  return [
    { informer: ctx.dataKeys, keysFor: (_event, dk) => [keyOf(dk)] },
    {
      informer: ctx.masterKeys,
      keysFor: (_event, mk, old) =>
        old && !mattersToDataKeys(old, mk)
          ? []
          : ctx.dataKeys
              .list()
              .filter((dk) => dk.spec.masterKeyRef.name === mk.metadata.name)
              .map(keyOf),
    },
    { informer: ctx.secrets, keysFor: (_event, secret) => ownersOfSecret(secret) },
  ];
}

/**
 * The DataKeys a Secret event concerns. A Secret whose label was removed leaves
 * the label-selected watch as a delete of the object *without* the label: its
 * controller reference still names the owner.
 */
export function ownersOfSecret(secret: SecretObject): string[] {
  const controller = (
    secret.metadata.ownerReferences as
      { kind?: string; name?: string; controller?: boolean; apiVersion?: string }[] | undefined
  )?.find((o) => o.controller && o.kind === 'DataKey' && o.apiVersion?.startsWith(`${GROUP}/`));
  const owner = secret.metadata.labels?.[LABEL_DATAKEY] ?? controller?.name;
  const keys: string[] = [];
  if (owner) keys.push(`${secret.metadata.namespace}/${owner}`);
  if (controller?.name && controller.name !== owner) {
    keys.push(`${secret.metadata.namespace}/${controller.name}`);
  }
  return keys;
}

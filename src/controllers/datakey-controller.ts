import { isDeepStrictEqual } from 'node:util';
import { LABEL_DATAKEY, type Condition, type DataKeyStatus, type MasterKey } from '../api/types';
import { DATA_KEY_SPEC_BYTES, KmsError, RateLimiter } from '../kms';
import { isNotFound } from '../runtime/kube-client';
import type { ReconcileResult } from '../runtime/workqueue';
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
import { findCondition, setCondition } from '../runtime/conditions';
import { dataKeysPath, secretsPath } from '../api/paths';
import { kmsCall, statusPatch, type ControllerContext } from './context';

/** Waiting on something outside this object (a MasterKey): retried on a slow timer and on MasterKey events. */
const WAIT_MS = 30_000;
export const DEFAULT_REWRAPS_PER_SECOND = 100;
const REWRAP_RETRY_MS = 200;

class NotReady extends Error {
  constructor(
    readonly reason: string,
    message: string,
    readonly retry: 'backoff' | 'wait',
  ) {
    super(message);
  }
}

/**
 * DataKey: makes sure a data key exists exactly once, wrapped by its MasterKey and
 * bound to the DataKey's identity, and that its Secret holds that ciphertext.
 * The plaintext is never requested: generation is *WithoutPlaintext.
 */
export interface DataKeyControllerOptions {
  /** Re-wraps per second after a rotation, across all DataKeys (0 = unlimited). */
  rewrapsPerSecond?: number;
}

export class DataKeyController {
  private readonly rewrapBudget: RateLimiter;

  constructor(
    private readonly ctx: ControllerContext,
    options: DataKeyControllerOptions = {},
  ) {
    this.rewrapBudget = new RateLimiter(options.rewrapsPerSecond ?? DEFAULT_REWRAPS_PER_SECOND);
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const dataKey = this.ctx.dataKeys.get(key);
    if (!dataKey || dataKey.metadata.deletionTimestamp) return;
    try {
      const found = await this.ensureDataKey(dataKey);
      let { wrapped } = found;
      if (!found.generated && wrapped.keyVersionId !== this.primaryVersion(wrapped.keyId)) {
        if (!this.rewrapBudget.tryTake('rewrap', 'all')) return { requeueAfterMs: REWRAP_RETRY_MS };
        wrapped = await this.rewrap(dataKey, wrapped);
      }
      const changed = found.generated || wrapped !== found.wrapped;
      await this.ensureSecret(dataKey, found.secret, wrapped, changed);
      await this.writeStatus(dataKey, wrapped, {
        type: 'Ready',
        status: 'True',
        reason: 'DataKeyReady',
        message: `Secret ${secretNameOf(dataKey)} holds the ciphertext (${wrapped.flow} flow)`,
        observedGeneration: dataKey.metadata.generation,
      });
    } catch (err) {
      if (!(err instanceof NotReady)) throw err;
      await this.writeStatus(dataKey, undefined, {
        type: 'Ready',
        status: 'False',
        reason: err.reason,
        message: err.message,
        observedGeneration: dataKey.metadata.generation,
      });
      if (err.retry === 'backoff') throw err;
      return { requeueAfterMs: WAIT_MS };
    }
  }

  /** The existing data key from any intact copy, or a new one only when none is left. */
  private async ensureDataKey(
    dataKey: DataKeyObject,
  ): Promise<{ wrapped: WrappedDataKey; generated: boolean; secret?: SecretObject }> {
    const masterKey = this.readyMasterKey(dataKey);
    const secret = await this.readSecret(dataKey);
    const candidates = [
      secret && this.ownedBy(secret, dataKey) ? wrappedFromSecret(secret.data) : undefined,
      wrappedFromStatus(dataKey.status),
    ].filter((c): c is WrappedDataKey => c !== undefined);
    // After a crash mid re-wrap the status copy may be newer than the Secret: prefer the primary version.
    const primary = this.primaryVersion(masterKey.status?.keyId as string);
    candidates.sort(
      (a, b) => Number(b.keyVersionId === primary) - Number(a.keyVersionId === primary),
    );
    for (const candidate of candidates) {
      if (this.opens(dataKey, candidate)) return { wrapped: candidate, generated: false, secret };
    }
    if (candidates.length > 0) {
      this.ctx.events.record(
        dataKey,
        'Warning',
        'DataKeyReissued',
        'No stored copy of the ciphertext opens any more (tampered); a new data key is issued',
      );
    }
    return { wrapped: await this.generate(dataKey, masterKey), generated: true, secret };
  }

  private readyMasterKey(dataKey: DataKeyObject): MasterKey {
    const name = dataKey.spec.masterKeyRef.name;
    const masterKey = this.ctx.masterKeys.get(name);
    if (!masterKey || masterKey.metadata.deletionTimestamp) {
      throw new NotReady('MasterKeyNotFound', `MasterKey ${name} does not exist`, 'wait');
    }
    if (masterKey.spec.enabled === false) {
      throw new NotReady('MasterKeyDisabled', `MasterKey ${name} is disabled`, 'wait');
    }
    if (
      !masterKey.status?.keyId ||
      findCondition(masterKey.status.conditions, 'Ready')?.status !== 'True'
    ) {
      throw new NotReady('MasterKeyNotReady', `MasterKey ${name} is not Ready yet`, 'wait');
    }
    return masterKey;
  }

  /** Verifies a stored ciphertext inside the core; the plaintext is zeroed at once. */
  private opens(dataKey: DataKeyObject, wrapped: WrappedDataKey): boolean {
    try {
      const plaintext = openWrapped(this.ctx.core, dataKey, wrapped, this.ctx.metrics.kmsCalls);
      plaintext.fill(0);
      return true;
    } catch (err) {
      if (err instanceof KmsError && err.code === 'InvalidParameter') return false;
      throw kmsNotReady(err);
    }
  }

  private async generate(dataKey: DataKeyObject, masterKey: MasterKey): Promise<WrappedDataKey> {
    const keyId = masterKey.status?.keyId as string;
    const bytes =
      dataKey.spec.numberOfBytes ?? DATA_KEY_SPEC_BYTES[dataKey.spec.keySpec ?? 'AES_256'];
    let wrapped: WrappedDataKey;
    try {
      // A rotated master key must use the Advance flow, or rotation would not take effect.
      if (this.hasRotated(keyId)) {
        const sealed = kmsCall(this.ctx, 'AdvanceGenerateDataKeyWithoutPlaintext', () =>
          this.ctx.core.advanceGenerateDataKeyWithoutPlaintext({
            keyId,
            numberOfBytes: bytes,
            aad: boundAad(dataKey),
          }),
        );
        wrapped = { ...sealed, flow: 'Advance' };
      } else {
        const sealed = kmsCall(this.ctx, 'GenerateDataKeyWithoutPlaintext', () =>
          this.ctx.core.generateDataKeyWithoutPlaintext({
            keyId,
            numberOfBytes: bytes,
            encryptionContext: boundContext(dataKey),
          }),
        );
        wrapped = { ...sealed, flow: 'Standard' };
      }
    } catch (err) {
      throw kmsNotReady(err);
    }
    // The status copy is written first (with a resourceVersion precondition): if
    // this fails, the key was never stored anywhere and nothing is replaced.
    await this.ctx.client.mergePatch(
      `${dataKeysPath(dataKey.metadata.namespace, dataKey.metadata.name)}/status`,
      statusPatch(dataKey, { ...statusFields(dataKey, wrapped) }),
    );
    this.ctx.events.record(
      dataKey,
      'Normal',
      'Generated',
      `Data key generated under key version ${wrapped.keyVersionId} (${wrapped.flow} flow)`,
    );
    return wrapped;
  }

  /**
   * Moves the data key to the primary version in the Advance flow, inside the
   * core (the plaintext never leaves it). The new ciphertext is stored in status
   * first, with a resourceVersion precondition; the Secret follows in one write.
   */
  private async rewrap(dataKey: DataKeyObject, wrapped: WrappedDataKey): Promise<WrappedDataKey> {
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
    await this.ctx.client.mergePatch(
      `${dataKeysPath(dataKey.metadata.namespace, dataKey.metadata.name)}/status`,
      statusPatch(dataKey, statusFields(dataKey, rewrapped)),
    );
    this.ctx.metrics.rewraps.inc({ result: 'success' });
    this.ctx.metrics.rewrapSeconds.observe((performance.now() - started) / 1000);
    this.ctx.events.record(
      dataKey,
      'Normal',
      'Rewrapped',
      `Re-wrapped from key version ${wrapped.keyVersionId} (${wrapped.flow}) to the primary version ${rewrapped.keyVersionId} (Advance); the data key is unchanged`,
    );
    return rewrapped;
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

  private ownedBy(secret: SecretObject, dataKey: DataKeyObject): boolean {
    const owners = (secret.metadata.ownerReferences ?? []) as {
      uid?: string;
      controller?: boolean;
    }[];
    return owners.some((o) => o.controller && o.uid === dataKey.metadata.uid);
  }

  /**
   * `readBefore` is what ensureDataKey read in this same reconcile. When the Secret
   * was absent there, it is not read again: the create below fails (409) if one
   * appeared since, and the reconcile is retried from a fresh read. An existing
   * Secret is read again before it is overwritten, as its owner may have changed.
   * `changed`: the data key was just generated or re-wrapped, so a differing
   * Secret is expected (no SecretRestored event).
   */
  private async ensureSecret(
    dataKey: DataKeyObject,
    readBefore: SecretObject | undefined,
    wrapped: WrappedDataKey,
    changed: boolean,
  ): Promise<void> {
    const namespace = dataKey.metadata.namespace as string;
    const name = secretNameOf(dataKey);
    const secret = readBefore && (await this.readSecret(dataKey));
    if (secret && !this.ownedBy(secret, dataKey)) {
      throw new NotReady(
        'SecretConflict',
        `Secret ${name} exists and is not owned by this DataKey; it is left untouched`,
        'wait',
      );
    }
    const manifest = secretManifest(dataKey, wrapped);
    if (
      secret &&
      secret.type === manifest.type &&
      secret.metadata.labels?.[LABEL_DATAKEY] === dataKey.metadata.name &&
      isDeepStrictEqual(secret.data, manifest.data)
    )
      return;
    if (!secret) {
      // A create fails (409) if a Secret appeared meanwhile: never a takeover.
      await this.ctx.client.create(secretsPath(namespace), manifest);
      if (!changed) {
        this.ctx.events.record(
          dataKey,
          'Warning',
          'SecretRestored',
          `Secret ${name} was missing; restored with the same data key`,
        );
      }
    } else {
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
      if (!changed && !this.isOlderCopy(dataKey, secret, wrapped)) {
        this.ctx.events.record(
          dataKey,
          'Warning',
          'SecretRestored',
          `Secret ${name} was changed; restored with the same data key`,
        );
      }
    }
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

  /** Writes status only when it changes. */
  private async writeStatus(
    dataKey: DataKeyObject,
    wrapped: WrappedDataKey | undefined,
    ready: Omit<Condition, 'lastTransitionTime'>,
  ): Promise<void> {
    const current = dataKey.status ?? {};
    const next: DataKeyStatus = {
      ...current,
      ...(wrapped ? statusFields(dataKey, wrapped) : {}),
      observedGeneration: dataKey.metadata.generation,
      conditions: setCondition(current.conditions, ready),
    };
    if (isDeepStrictEqual(stripTimes(next), stripTimes(current))) return;
    await this.ctx.client.mergePatch(
      `${dataKeysPath(dataKey.metadata.namespace, dataKey.metadata.name)}/status`,
      { status: next },
    );
  }
}

function stripTimes(status: DataKeyStatus): unknown {
  return {
    ...status,
    conditions: status.conditions?.map(({ lastTransitionTime: _t, ...rest }) => rest),
  };
}

function kmsNotReady(err: unknown): Error {
  if (!(err instanceof KmsError)) return err as Error;
  return new NotReady('KMSError', `${err.code}: ${err.message}`, 'backoff');
}

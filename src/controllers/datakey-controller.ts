import { ConditionType, DataKeyEvent, DataKeyReason } from '../api/conditions';
import { MIN_ROTATION_SECONDS } from '../api/crds';
import { dataKeysPath, secretsPath } from '../api/paths';
import {
  ANNOTATION_REGENERATE,
  GROUP,
  LABEL_DATAKEY,
  type Condition,
  type DataKeyStatus,
  type MasterKey,
} from '../api/types';
import {
  boundAad,
  boundContext,
  currentOf,
  generationsFromSecret,
  generationsFromStatus,
  openWrapped,
  secretData,
  secretManifest,
  secretNameOf,
  statusFields,
  type DataKeyObject,
  type SecretObject,
  type WrappedDataKey,
  type WrappedGeneration,
} from '../datakey';
import { KmsError, RateLimiter } from '../kms';
import { setCondition } from '../runtime/conditions';
import { keyOf } from '../runtime/informer';
import { isConflict, isNotFound, type KubeObject } from '../runtime/kube-client';
import type { ManagedController, Watch } from '../runtime/manager';
import { NotReady, ready, type ReconcileOutcome } from '../runtime/outcome';
import { kmsCall, type ControllerContext } from './context';
import {
  candidatesByGeneration,
  dataKeyBytes,
  generationFlow,
  isOwnedBy,
  keepPreviousOf,
  keptGenerations,
  masterKeyBlocks,
  needsRewrap,
  nextGenerationNumber,
  nextRegenerationTime,
  regenerationDue,
  secretAction,
  secretIsBehind,
  tokensSeenWith,
  type RegenerationDue,
} from './datakey-policy';
import { MAX_TIMER_MS, mattersToDataKeys } from './masterkey-policy';
import { notReadyCondition, writeStatus } from './status';

export const DEFAULT_REWRAPS_PER_SECOND = 100;
const REWRAP_RETRY_MS = 200;

export interface DataKeyControllerOptions {
  /** Re-wraps per second after a rotation, across all DataKeys (0 = unlimited). */
  rewrapsPerSecond?: number;
  /** The shortest regeneration interval honoured (the CRD's 7 days; lower only in tests). */
  minRegenerationSeconds?: number;
}

/** What ensureGenerations found: the kept generations, verified in the core. */
interface FoundGenerations {
  dataKey: DataKeyObject;
  generations: WrappedGeneration[];
  /** A new data key was issued in this reconcile (the first, or after tampering). */
  generated: boolean;
  secret?: SecretObject;
  /** Every generation in the Secret opened: it was only behind (an interrupted write, the first layout). */
  secretBehind: boolean;
  /** The Secret was created in this reconcile and holds `generations` (the first data key). */
  secretStored?: boolean;
}

/**
 * DataKey: makes sure its generations of data keys exist exactly once, wrapped
 * by its MasterKey and bound to the DataKey's identity, that a new generation
 * is made once per regenerate token or schedule tick, and that its Secret holds
 * those ciphertexts. The plaintext is never requested: generation is *WithoutPlaintext.
 */
export class DataKeyController implements ManagedController {
  readonly name = 'datakey';
  readonly watches: ReturnType<typeof dataKeyWatches>;
  private readonly rewrapBudget: RateLimiter;
  private readonly minRegenerationSeconds: number;
  /**
   * Secrets whose create answered 409 while the label-selected cache had none:
   * one exists without our label, so these names are read from the API server.
   */
  private readonly secretsToRead = new Set<string>();
  /**
   * Secrets this controller created that its cache has not shown yet
   * (client-go's "expectations"): a reconcile woken by the status write that
   * follows does not take the Secret for missing. An informer add or delete of
   * the name ends the expectation.
   */
  private readonly createdSecrets = new Map<string, SecretObject>();
  /**
   * DataKeys whose status this controller wrote, by the resourceVersion the write
   * replaced, until the cache shows a newer one (expectations again): a reconcile
   * woken meanwhile (by the Secret's add) would decide on the status before the
   * write and be refused with 409. The watch event of the write wakes it again.
   */
  private readonly statusWrittenOver = new Map<string, string>();

  constructor(
    private readonly ctx: ControllerContext,
    options: DataKeyControllerOptions = {},
  ) {
    this.rewrapBudget = new RateLimiter(options.rewrapsPerSecond ?? DEFAULT_REWRAPS_PER_SECOND);
    this.minRegenerationSeconds = options.minRegenerationSeconds ?? MIN_ROTATION_SECONDS;
    this.watches = dataKeyWatches(ctx);
    ctx.secrets.on((event, secret) => {
      if (event !== 'update') this.createdSecrets.delete(keyOf(secret));
    });
  }

  allKeys(): string[] {
    return this.ctx.dataKeys.list().map(keyOf);
  }

  async reconcile(key: string): Promise<ReconcileOutcome> {
    let dataKey = this.ctx.dataKeys.get(key);
    if (!dataKey || dataKey.metadata.deletionTimestamp) {
      this.secretsToRead.delete(key);
      this.statusWrittenOver.delete(key);
      return ready();
    }
    if (this.statusWrittenOver.get(key) === dataKey.metadata.resourceVersion) return ready();
    this.statusWrittenOver.delete(key);
    try {
      const found = await this.ensureGenerations(dataKey);
      dataKey = found.dataKey;
      let { generations } = found;
      // Re-wrapped or regenerated after ensureGenerations (a Secret it stored is behind).
      let rewritten = false;
      const keyId = generations[0].keyId;
      if (needsRewrap(generations, this.primaryVersion(keyId))) {
        if (!this.rewrapBudget.tryTake('rewrap', 'all')) return ready(REWRAP_RETRY_MS);
        ({ dataKey, generations } = await this.rewrap(dataKey, generations));
        rewritten = true;
      }
      const due = regenerationDue(
        dataKey,
        currentOf(generations),
        Date.now(),
        this.minRegenerationSeconds,
      );
      if (due) {
        ({ dataKey, generations } = await this.regenerate(dataKey, generations, due));
        rewritten = true;
      }
      if (!found.secretStored || rewritten) {
        const changed = found.generated || rewritten;
        await this.ensureSecret(dataKey, found.secret, generations, changed, found.secretBehind);
      }
      const current = currentOf(generations);
      await this.writeReady(dataKey, generations, {
        type: ConditionType.Ready,
        status: 'True',
        reason: DataKeyReason.DataKeyReady,
        // Not the flow or key version (status.flow, status.keyVersionId say them): a
        // re-wrap, which leaves the data keys as they are, then needs no second status write.
        message: `Secret ${secretNameOf(dataKey)} holds the ciphertext of generation ${current.generation}`,
        observedGeneration: dataKey.metadata.generation,
      });
      return ready(this.untilNextRegeneration(dataKey, current));
    } catch (err) {
      if (!(err instanceof NotReady)) throw err;
      await this.writeReady(
        dataKey,
        undefined,
        notReadyCondition(err.outcome, dataKey.metadata.generation),
      );
      return err.outcome;
    }
  }

  /**
   * The kept generations from every intact copy (see candidatesByGeneration),
   * or a new data key only when none is left.
   */
  private async ensureGenerations(dataKey: DataKeyObject): Promise<FoundGenerations> {
    const masterKey = this.ctx.masterKeys.get(dataKey.spec.masterKeyRef.name);
    const blocked = masterKeyBlocks(dataKey, masterKey);
    if (blocked) throw new NotReady(blocked);
    const keyId = (masterKey as MasterKey).status?.keyId as string;
    const secret = await this.readSecret(dataKey);
    const copies = {
      secret: secret && isOwnedBy(secret, dataKey) ? generationsFromSecret(secret) : [],
      status: generationsFromStatus(dataKey.status, dataKey.metadata.creationTimestamp),
    };
    const opened: WrappedGeneration[] = [];
    const openedBlobs: Buffer[] = [];
    for (const group of candidatesByGeneration(copies, this.primaryVersion(keyId))) {
      const intact = group.filter((candidate) => this.opens(dataKey, candidate));
      if (intact.length > 0) opened.push(intact[0]);
      openedBlobs.push(...intact.map((c) => c.ciphertextBlob));
    }
    const secretBehind =
      copies.secret.length > 0 &&
      secretIsBehind(
        dataKey,
        secret,
        secretData(dataKey, copies.secret),
        copies.secret.every((c) => openedBlobs.some((b) => b.equals(c.ciphertextBlob))),
      );
    const kept = keptGenerations(opened, keepPreviousOf(dataKey));
    const currentNumber = nextGenerationNumber(
      [...copies.secret, ...copies.status].map((c) => c.generation),
    );
    // The highest generation ever recorded must open; otherwise the current data key is lost.
    if (kept.length > 0 && currentOf(kept).generation === currentNumber - 1) {
      return { dataKey, generations: kept, generated: false, secret, secretBehind };
    }
    const token = dataKey.metadata.annotations?.[ANNOTATION_REGENERATE];
    if (currentNumber === 1 && !secret) {
      return { ...(await this.issueFirst(dataKey, keyId, token)), generated: true };
    }
    if (currentNumber > 1) {
      this.ctx.events.record(
        dataKey,
        'Warning',
        DataKeyEvent.DataKeyReissued,
        'No stored copy of the current ciphertext opens any more (tampered); a new data key is issued as a new generation',
      );
    }
    const issued = await this.addGeneration(dataKey, kept, keyId, currentNumber, {
      token,
      scheduled: false,
    });
    return { ...issued, generated: true, secret, secretBehind: false };
  }

  /**
   * The first data key of a DataKey nothing holds a key for yet, stored by the
   * Secret's exclusive create: the create is the one place two issuers (a
   * replica on a stale cache, a run killed before its status write) meet, and
   * only one create succeeds. A 409 drops the fresh key before anything stored
   * it, and the retry reads the Secret that is there. Once the create succeeds
   * the Secret holds the key: a run killed before the status write finds it
   * there and keeps it. The status (generations, the token it answers, Ready)
   * follows in the reconcile's one status write.
   */
  private async issueFirst(
    dataKey: DataKeyObject,
    keyId: string,
    token: string | undefined,
  ): Promise<Omit<FoundGenerations, 'generated'>> {
    const fresh: WrappedGeneration = {
      ...this.generate(dataKey, keyId),
      generation: 1,
      creationTime: new Date().toISOString(),
    };
    const secret = await this.createSecret(dataKey, secretManifest(dataKey, [fresh]));
    this.ctx.events.record(
      dataKey,
      'Normal',
      DataKeyEvent.Generated,
      `Data key generated under key version ${fresh.keyVersionId} (${fresh.flow} flow)`,
    );
    const status = {
      ...dataKey.status,
      regenerateTokensSeen: tokensSeenWith(dataKey.status?.regenerateTokensSeen, token),
    };
    return {
      dataKey: { ...dataKey, status },
      generations: [fresh],
      secret,
      secretBehind: false,
      secretStored: true,
    };
  }

  /**
   * Creates a Secret the cache does not hold. A 409 means one exists without our
   * label (or one appeared meanwhile): never a takeover; the name is read from
   * the API server from now on and the reconcile is retried.
   */
  private async createSecret(
    dataKey: DataKeyObject,
    manifest: SecretObject,
  ): Promise<SecretObject> {
    const key = `${dataKey.metadata.namespace}/${secretNameOf(dataKey)}`;
    try {
      const created = await this.ctx.client.create<SecretObject>(
        secretsPath(dataKey.metadata.namespace as string),
        manifest,
      );
      if (!this.ctx.secrets.get(key)) this.createdSecrets.set(key, created);
      return created;
    } catch (err) {
      if (isConflict(err)) this.secretsToRead.add(key);
      throw err;
    }
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

  /** A fresh data key as the next generation, on request or schedule; older ones beyond keepPrevious dropped. */
  private async regenerate(
    dataKey: DataKeyObject,
    generations: WrappedGeneration[],
    due: RegenerationDue,
  ): Promise<{ dataKey: DataKeyObject; generations: WrappedGeneration[] }> {
    const current = currentOf(generations);
    const next = await this.addGeneration(
      dataKey,
      generations,
      current.keyId,
      current.generation + 1,
      due,
    );
    const why = due.token ? `on request (${ANNOTATION_REGENERATE}=${due.token})` : 'on schedule';
    this.ctx.events.record(
      dataKey,
      'Normal',
      DataKeyEvent.Regenerated,
      `Generation ${current.generation + 1} generated ${why}; ${next.generations.length - 1} previous generation(s) kept`,
    );
    return next;
  }

  /**
   * Generates a new data key as generation `number` and records it in status
   * first, in one write guarded by the resourceVersion it was decided on,
   * together with the token it answers: if that write fails, the key was never
   * stored anywhere and nothing is replaced; once it succeeds, neither the token
   * nor the schedule tick asks again.
   */
  private async addGeneration(
    dataKey: DataKeyObject,
    previous: WrappedGeneration[],
    keyId: string,
    number: number,
    due: RegenerationDue,
  ): Promise<{ dataKey: DataKeyObject; generations: WrappedGeneration[] }> {
    const fresh: WrappedGeneration = {
      ...this.generate(dataKey, keyId),
      generation: number,
      creationTime: new Date().toISOString(),
    };
    const generations = keptGenerations([...previous, fresh], keepPreviousOf(dataKey));
    const written = await this.patchStatus(dataKey, {
      ...dataKey.status,
      ...this.generationFields(dataKey, generations),
      regenerateTokensSeen: tokensSeenWith(dataKey.status?.regenerateTokensSeen, due.token),
    });
    if (number === 1) {
      this.ctx.events.record(
        dataKey,
        'Normal',
        DataKeyEvent.Generated,
        `Data key generated under key version ${fresh.keyVersionId} (${fresh.flow} flow)`,
      );
    }
    return { dataKey: written, generations };
  }

  private generate(dataKey: DataKeyObject, keyId: string): WrappedDataKey {
    const numberOfBytes = dataKeyBytes(dataKey);
    try {
      if (generationFlow(this.hasRotated(keyId)) === 'Advance') {
        const sealed = kmsCall(this.ctx, 'AdvanceGenerateDataKeyWithoutPlaintext', () =>
          this.ctx.core.advanceGenerateDataKeyWithoutPlaintext({
            keyId,
            numberOfBytes,
            aad: boundAad(dataKey),
          }),
        );
        return { ...sealed, flow: 'Advance' };
      }
      const sealed = kmsCall(this.ctx, 'GenerateDataKeyWithoutPlaintext', () =>
        this.ctx.core.generateDataKeyWithoutPlaintext({
          keyId,
          numberOfBytes,
          encryptionContext: boundContext(dataKey),
        }),
      );
      return { ...sealed, flow: 'Standard' };
    } catch (err) {
      throw kmsNotReady(err);
    }
  }

  /**
   * Moves every kept generation to the primary version in the Advance flow,
   * inside the core (the plaintexts never leave it). The new ciphertexts are
   * stored in status first, all in one write; the Secret follows in one write.
   */
  private async rewrap(
    dataKey: DataKeyObject,
    generations: WrappedGeneration[],
  ): Promise<{ dataKey: DataKeyObject; generations: WrappedGeneration[] }> {
    const started = performance.now();
    let rewrapped: WrappedGeneration[];
    try {
      rewrapped = generations.map((g) => {
        const sealed = kmsCall(this.ctx, 'RewrapToPrimary', () =>
          this.ctx.core.rewrapToPrimary({
            ciphertextBlob: g.ciphertextBlob,
            // Standard blobs are bound to the canonical context, Advance blobs to the same bytes as Aad.
            sourceAad: boundAad(dataKey),
            destinationAad: boundAad(dataKey),
          }),
        );
        return { ...g, ...sealed, flow: 'Advance' as const };
      });
    } catch (err) {
      this.ctx.metrics.rewraps.inc({ result: 'error' });
      throw kmsNotReady(err);
    }
    const written = await this.patchStatus(dataKey, {
      ...dataKey.status,
      ...this.generationFields(dataKey, rewrapped),
    });
    this.ctx.metrics.rewraps.inc({ result: 'success' });
    this.ctx.metrics.rewrapSeconds.observe((performance.now() - started) / 1000);
    const from = [...new Set(generations.map((g) => `${g.keyVersionId} (${g.flow})`))].join(', ');
    this.ctx.events.record(
      dataKey,
      'Normal',
      DataKeyEvent.Rewrapped,
      `Re-wrapped ${rewrapped.length} generation(s) from key version ${from} to the primary version ${currentOf(rewrapped).keyVersionId} (Advance); the data keys are unchanged`,
    );
    return { dataKey: written, generations: rewrapped };
  }

  /** The status layout of the generations plus when the next one is due. */
  private generationFields(dataKey: DataKeyObject, generations: WrappedGeneration[]) {
    const fields: DataKeyStatus = statusFields(dataKey, generations);
    const next = nextRegenerationTime(dataKey, currentOf(generations), this.minRegenerationSeconds);
    if (next) fields.nextRegenerationTime = next;
    // An interval removed from the spec: null removes the field in the merge patch.
    else if (dataKey.status?.nextRegenerationTime) {
      (fields as Record<string, unknown>).nextRegenerationTime = null;
    }
    return fields;
  }

  private untilNextRegeneration(
    dataKey: DataKeyObject,
    current: WrappedGeneration,
  ): number | undefined {
    const next = nextRegenerationTime(dataKey, current, this.minRegenerationSeconds);
    if (!next) return undefined;
    return Math.max(100, Math.min(Date.parse(next) - Date.now() + 50, MAX_TIMER_MS));
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
    const key = `${namespace}/${secretNameOf(dataKey)}`;
    const cached = this.ctx.secrets.get(key) ?? this.createdSecrets.get(key);
    if (cached) {
      this.secretsToRead.delete(key);
      return cached;
    }
    // The synced, label-selected cache proves no labelled Secret: one without our
    // label is found by the create's 409 (createSecret), which marks it to be read.
    if (!this.secretsToRead.has(key)) return undefined;
    try {
      return await this.ctx.client.get<SecretObject>(secretsPath(namespace, secretNameOf(dataKey)));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * `readBefore` is what ensureGenerations read in this same reconcile. When the Secret
   * was absent there, it is not read again: the create below fails (409) if one
   * appeared since, and the reconcile is retried from a fresh read. An existing
   * Secret is read again before it is overwritten, as its owner may have changed.
   * `keyChanged`: generations were just issued or re-wrapped, so a differing
   * Secret is expected (no SecretRestored event); so is one merely `behind`.
   */
  private async ensureSecret(
    dataKey: DataKeyObject,
    readBefore: SecretObject | undefined,
    generations: WrappedGeneration[],
    keyChanged: boolean,
    behind: boolean,
  ): Promise<void> {
    const namespace = dataKey.metadata.namespace as string;
    const name = secretNameOf(dataKey);
    const secret = readBefore && (await this.readSecret(dataKey));
    const manifest = secretManifest(dataKey, generations);
    const decision = secretAction(dataKey, secret, manifest, keyChanged, behind);
    if (decision.action === 'refuse') throw new NotReady(decision.outcome);
    if (decision.action === 'none') return;
    if (decision.action === 'create' || !secret) {
      await this.createSecret(dataKey, manifest);
      if (decision.restored) this.secretRestored(dataKey, `Secret ${name} was missing`);
      return;
    }
    // One full replace (guarded by resourceVersion), not an apply: blobs, versions,
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
    if (decision.restored) this.secretRestored(dataKey, `Secret ${name} was changed`);
  }

  private secretRestored(dataKey: DataKeyObject, what: string): void {
    this.ctx.events.record(
      dataKey,
      'Warning',
      DataKeyEvent.SecretRestored,
      `${what}; restored with the same data keys`,
    );
  }

  private writeReady(
    dataKey: DataKeyObject,
    generations: WrappedGeneration[] | undefined,
    condition: Omit<Condition, 'lastTransitionTime'>,
  ): Promise<DataKeyObject> {
    const current = dataKey.status ?? {};
    return this.patchStatus(dataKey, {
      ...current,
      ...(generations ? this.generationFields(dataKey, generations) : {}),
      observedGeneration: dataKey.metadata.generation,
      conditions: setCondition(current.conditions, condition),
    });
  }

  private async patchStatus(dataKey: DataKeyObject, next: DataKeyStatus): Promise<DataKeyObject> {
    const written = await writeStatus(
      this.ctx.client,
      dataKeysPath(dataKey.metadata.namespace, dataKey.metadata.name),
      dataKey,
      next,
    );
    if (written !== dataKey) {
      this.statusWrittenOver.set(keyOf(dataKey), dataKey.metadata.resourceVersion as string);
    }
    return written;
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

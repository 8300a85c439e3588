import { generateKeyPair, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { BlobFormat, ivOf, openBlob, parseBlob, sealBlob, type ParsedBlob } from './blob';
import { systemClock, formatKmsTime, type Clock } from './clock';
import { randomKeyBytes, toSecretKey, zero } from './crypto';
import {
  KmsError,
  aliasExists,
  aliasNotFound,
  dryRunOperation,
  invalidCiphertext,
  invalidParameter,
  keyDisabled,
  keyNotFound,
  keyPendingDeletion,
  keyVersionNotFound,
  onlySymmetric,
} from './errors';
import {
  DATA_KEY_SPEC_BYTES,
  SYMMETRIC_KEY_SPECS,
  ASYMMETRIC_KEY_SPECS,
  isSymmetricSpec,
  type KeyUsage,
  type MasterKeySpec,
  type StoredAlias,
  type StoredKey,
  type StoredKeyVersion,
} from './model';
import { KmsInstance, newInstance, newInstanceKeyId, type StoredInstance } from './instance';
import type { RootKey } from './root-key';
import type { KeyStore } from './store';
import {
  DAY_SECONDS,
  MAX_AAD_BYTES,
  MAX_DATA_KEY_BYTES,
  MAX_KEY_ID_CHARS,
  MAX_PLAINTEXT_BYTES,
  canonicalEncryptionContext,
  checkAliasName,
  checkDescription,
  checkRange,
  ownEntry,
  paginate,
  parseRotationInterval,
  UUID,
  type EncryptionContext,
  type Page,
} from './validate';

export interface KmsCoreOptions {
  store: KeyStore;
  rootKey: RootKey;
  clock?: Clock;
  /** Shortest accepted RotationInterval; 7 days unless a test lowers it on purpose. */
  minRotationIntervalSeconds?: number;
  /**
   * How long one day of a deletion window (PendingWindowInDays) lasts, in
   * seconds; a day unless a test shortens it on purpose (the 7-day minimum stays).
   */
  deletionDaySeconds?: number;
  /**
   * Operator mode: every key belongs to the core's one built-in KMS instance, so
   * the Instance API serves them all; otherwise only keys created with
   * DKMSInstanceId do, as in the real service.
   */
  allKeysInInstance?: boolean;
  /**
   * Whether the store may hold changes this core has not loaded (another
   * replica writes it too): a lookup that misses then reloads once (see
   * `whenFresh`). Unset: this core is the store's only writer, a miss is a miss.
   */
  storeMayHaveChanged?: () => boolean;
  /** Fewest milliseconds between two reloads caused by misses; default 1000. */
  missReloadIntervalMs?: number;
}

/** Default of KmsCoreOptions.missReloadIntervalMs. */
export const MISS_RELOAD_INTERVAL_MS = 1000;

/** Errors of a lookup that another writer of a shared store may have made true meanwhile. */
const MISS_CODES = new Set([
  'Forbidden.KeyNotFound',
  'Forbidden.KeyVersionNotFound',
  'Forbidden.AliasNotFound',
]);

export interface KeyMetadata {
  keyId: string;
  description: string;
  keySpec: MasterKeySpec;
  keyUsage: KeyUsage;
  keyState: string;
  origin: 'Aliyun_KMS';
  protectionLevel: 'SOFTWARE';
  creationDate: string;
  deleteDate?: string;
  primaryKeyVersion: string;
  lastRotationDate: string;
  nextRotationDate?: string;
  automaticRotation: 'Enabled' | 'Disabled' | 'Suspended';
  rotationInterval?: string;
  dkmsInstanceId?: string;
}

export interface KeyVersionInfo {
  keyId: string;
  keyVersionId: string;
  creationDate: string;
}

export interface Sealed {
  keyId: string;
  keyVersionId: string;
  ciphertextBlob: Buffer;
}
export interface SealedAdvance extends Sealed {
  algorithm: 'AES_GCM';
  iv: Buffer;
}
export interface Opened {
  keyId: string;
  keyVersionId: string;
  /** The caller must zero this buffer once it has used it. */
  plaintext: Buffer;
}

export interface CreateKeyInput {
  /**
   * Extension for the operator (not on the HTTP API): a caller-chosen UUID makes
   * creation idempotent, so a retry after a crash finds the key instead of
   * making a second one.
   */
  keyId?: string;
  description?: string;
  keySpec?: string;
  keyUsage?: string;
  enableAutomaticRotation?: boolean;
  rotationInterval?: string;
  /** Creates the key in the KMS instance (`kst-...`): its id is then `key-...`. */
  dkmsInstanceId?: string;
}

/** What a Standard-flow ciphertext is bound to: an EncryptionContext (OpenAPI) or raw Aad (Instance API). */
export interface Binding {
  encryptionContext?: EncryptionContext;
  aad?: Buffer;
}

export interface DataKeyInput extends Binding {
  keyId: string;
  keySpec?: string;
  numberOfBytes?: number;
  dryRun?: boolean;
}

export interface AdvanceDataKeyInput {
  keyId: string;
  numberOfBytes: number;
  aad?: Buffer;
  dryRun?: boolean;
}

interface LiveVersion {
  keyId: string;
  keyVersionId: string;
  /** AES key of a symmetric version; undefined for asymmetric keys. */
  aes?: KeyObject;
}

const EMPTY = Buffer.alloc(0);
const SECONDS_PER_WEEK = 7 * DAY_SECONDS;

/**
 * The embedded KMS: master keys with versions and aliases, and the data-key and
 * envelope operations of the Alibaba Cloud KMS API, with its key-version rules.
 * It knows nothing about HTTP or Kubernetes.
 */
export class KmsCore {
  private readonly store: KeyStore;
  private readonly rootKey: RootKey;
  private readonly clock: Clock;
  private readonly minRotationSeconds: number;
  private readonly deletionDaySeconds: number;
  private readonly keys = new Map<string, StoredKey>();
  private readonly aliases = new Map<string, StoredAlias>();
  private readonly versions = new Map<string, LiveVersion>();
  private readonly allKeysInInstance: boolean;
  private kmsInstance?: KmsInstance;
  private mutationTail: Promise<unknown> = Promise.resolve();
  private readonly storeMayHaveChanged: () => boolean;
  private readonly missReloadIntervalMs: number;
  /** The reload the next miss waits for, while it has not started yet. */
  private pendingMissReload?: Promise<void>;
  private lastMissReloadAt = -Infinity;

  private constructor(options: KmsCoreOptions) {
    this.store = options.store;
    this.rootKey = options.rootKey;
    this.clock = options.clock ?? systemClock;
    this.minRotationSeconds = options.minRotationIntervalSeconds ?? SECONDS_PER_WEEK;
    this.deletionDaySeconds = options.deletionDaySeconds ?? DAY_SECONDS;
    this.allKeysInInstance = options.allKeysInInstance ?? false;
    this.storeMayHaveChanged = options.storeMayHaveChanged ?? (() => false);
    this.missReloadIntervalMs = options.missReloadIntervalMs ?? MISS_RELOAD_INTERVAL_MS;
  }

  static async open(options: KmsCoreOptions): Promise<KmsCore> {
    const core = new KmsCore(options);
    await core.loadFromStore();
    return core;
  }

  /** Re-reads the store, e.g. after another replica changed it; ordered with mutations. */
  reload(): Promise<void> {
    return this.mutate(() => this.loadFromStore());
  }

  /**
   * Runs `lookup`; when it misses a key, a key version or an alias while the
   * store may hold changes not loaded yet, runs it once more after a reload
   * that started after the miss. Replicas share the store: a key another
   * replica created or rotated a moment ago (or while this one's reload failed)
   * is then answered, not reported missing. Misses share reloads, at most one
   * per missReloadIntervalMs, and reload only while something changed, so
   * unknown ids cannot turn into a flood of store reads. A failed reload
   * answers the miss.
   */
  async whenFresh<T>(lookup: () => T | Promise<T>): Promise<T> {
    try {
      return await lookup();
    } catch (err) {
      if (!(err instanceof KmsError) || !MISS_CODES.has(err.code)) throw err;
      if (!this.storeMayHaveChanged()) throw err;
      try {
        await this.reloadAfterMiss();
      } catch {
        throw err;
      }
      return lookup();
    }
  }

  /** A reload that starts after this call, shared with every miss until it starts. */
  reloadAfterMiss(): Promise<void> {
    this.pendingMissReload ??= (async () => {
      // Always a timer first: the field is set before this body goes on.
      const wait = this.lastMissReloadAt + this.missReloadIntervalMs - performance.now();
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
      this.pendingMissReload = undefined; // later misses wait for the next one
      this.lastMissReloadAt = performance.now();
      await this.reload();
    })();
    return this.pendingMissReload;
  }

  private async loadFromStore(): Promise<void> {
    const { keys, aliases, instance } = await this.store.load();
    const nextVersions = new Map<string, LiveVersion>();
    for (const key of keys) {
      for (const version of key.versions) {
        nextVersions.set(version.keyVersionId, this.liveVersion(key, version));
      }
    }
    this.keys.clear();
    this.aliases.clear();
    this.versions.clear();
    for (const key of keys) this.keys.set(key.keyId, key);
    for (const alias of aliases) this.aliases.set(alias.aliasName, alias);
    for (const [id, live] of nextVersions) this.versions.set(id, live);
    if (instance) this.adoptInstance(instance);
  }

  // ---- the KMS instance -----------------------------------------------------

  /** The core's KMS instance, once `ensureInstance` has run (or the store held one). */
  get instance(): KmsInstance | undefined {
    return this.kmsInstance;
  }

  /**
   * Creates the one KMS instance (id, CA) on first start and persists it; a
   * second writer that lost the race (another replica) adopts the winner's.
   */
  ensureInstance(): Promise<KmsInstance> {
    return this.mutate(async () => {
      if (this.kmsInstance) return this.kmsInstance;
      const fresh = newInstance(this.rootKey, this.clock.now());
      try {
        await this.store.putInstance(fresh, true);
        return this.adoptInstance(fresh);
      } catch (err) {
        // Reload everything, not just the instance: the store's view must match the cache.
        await this.loadFromStore();
        if (!this.kmsInstance) throw err;
        return this.kmsInstance;
      }
    });
  }

  private adoptInstance(doc: StoredInstance): KmsInstance {
    if (this.kmsInstance?.id === doc.instanceId) this.kmsInstance.replace(doc);
    else {
      this.kmsInstance = new KmsInstance(doc, this.rootKey, this.clock, (change) =>
        this.mutate(() => this.changeInstance(change)),
      );
    }
    return this.kmsInstance;
  }

  /**
   * Writes one change of the instance record. When the write fails because
   * another replica changed the record first, reloads and applies the change
   * once more to the fresh record (the changes are pure functions of it).
   */
  private async changeInstance<T>(change: (draft: StoredInstance) => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const current = this.kmsInstance as KmsInstance;
      const draft = structuredClone(current.record);
      const result = change(draft);
      try {
        await this.store.putInstance(draft, false);
        current.replace(draft);
        return result;
      } catch (err) {
        if (attempt > 0) throw err;
        await this.loadFromStore();
      }
    }
  }

  /** The key behind a KeyId of an Instance API call: only keys of the instance are served. */
  instanceKey(keyIdOrAlias: string, parameter = 'KeyId'): StoredKey {
    const key = this.resolveKey(keyIdOrAlias, parameter);
    if (!this.inInstance(key)) throw keyNotFound(keyIdOrAlias);
    return key;
  }

  /** The instance key whose version sealed `blob`; the blob itself is not opened. */
  instanceKeyOfBlob(blob: Buffer, parameter = 'CiphertextBlob'): StoredKey {
    const { live } = this.locateBlob(blob, parameter);
    const key = this.keys.get(live.keyId) as StoredKey;
    if (!this.inInstance(key)) throw invalidCiphertext(parameter);
    return key;
  }

  /** How many keys the Instance API serves (GetKmsInstance's KeyNum). */
  instanceKeyCount(): number {
    return [...this.keys.values()].filter((key) => this.inInstance(key)).length;
  }

  private inInstance(key: StoredKey): boolean {
    const id = this.kmsInstance?.id;
    return id !== undefined && (this.allKeysInInstance || key.dkmsInstanceId === id);
  }

  generateRandom(length: number): Buffer {
    checkRange('Length', length, 1, MAX_DATA_KEY_BYTES);
    return randomBytes(length);
  }

  close(): Promise<void> {
    return this.store.close();
  }

  // ---- keys ---------------------------------------------------------------

  async createKey(input: CreateKeyInput): Promise<KeyMetadata> {
    const keySpec = checkKeySpec(input.keySpec ?? 'Aliyun_AES_256');
    const keyUsage = checkKeyUsage(input.keyUsage ?? 'ENCRYPT/DECRYPT', keySpec);
    const description = checkDescription(input.description ?? '');
    const automatic = input.enableAutomaticRotation ?? false;
    if (automatic && !isSymmetricSpec(keySpec)) {
      throw invalidParameter('EnableAutomaticRotation', 'Only symmetric keys rotate.');
    }
    const interval =
      input.rotationInterval !== undefined
        ? parseRotationInterval(input.rotationInterval, this.minRotationSeconds)
        : automatic
          ? 365 * DAY_SECONDS
          : undefined;
    if (input.keyId !== undefined && !UUID.test(input.keyId)) throw invalidParameter('KeyId');
    const instanceId = input.dkmsInstanceId || undefined;
    if (instanceId !== undefined && instanceId !== this.kmsInstance?.id) {
      throw invalidParameter('DKMSInstanceId', 'No KMS instance has this id.');
    }
    // RSA generation takes up to a second of CPU: it runs on the thread pool, outside the lock.
    const material = await generateMaterial(keySpec);
    try {
      return await this.mutate(async () => {
        const existing = input.keyId === undefined ? undefined : this.keys.get(input.keyId);
        if (existing) return this.metadataOf(existing);
        const now = this.nowIso();
        const key: StoredKey = {
          keyId: input.keyId ?? (instanceId ? newInstanceKeyId() : randomUUID()),
          dkmsInstanceId: instanceId,
          description,
          keySpec,
          keyUsage,
          keyState: 'Enabled',
          creationDate: now,
          automaticRotation: automatic,
          rotationIntervalSeconds: interval,
          lastRotationDate: now,
          versions: [],
        };
        key.versions.push(this.newVersion(key, now, material));
        await this.saveKey(key);
        return this.metadataOf(key);
      });
    } finally {
      zero(material);
    }
  }

  /** Whether a key with this id (not an alias) is in the core. */
  hasKey(keyId: string): boolean {
    return this.keys.has(keyId);
  }

  describeKey(keyId: string): KeyMetadata {
    return this.metadataOf(this.resolveKey(keyId));
  }

  listKeys(page: Page): { keys: string[]; totalCount: number } {
    const ids = [...this.keys.values()]
      .sort(
        (a, b) => a.creationDate.localeCompare(b.creationDate) || a.keyId.localeCompare(b.keyId),
      )
      .map((k) => k.keyId);
    const { items, totalCount } = paginate(ids, page);
    return { keys: items, totalCount };
  }

  enableKey(keyId: string): Promise<KeyMetadata> {
    return this.updateKeyMetadata(keyId, (key) => {
      if (key.keyState === 'PendingDeletion') throw keyPendingDeletion(key.keyId);
      key.keyState = 'Enabled';
    });
  }

  disableKey(keyId: string): Promise<KeyMetadata> {
    return this.updateKeyMetadata(keyId, (key) => {
      if (key.keyState === 'PendingDeletion') throw keyPendingDeletion(key.keyId);
      key.keyState = 'Disabled';
    });
  }

  scheduleKeyDeletion(keyId: string, pendingWindowInDays: number): Promise<KeyMetadata> {
    checkRange('PendingWindowInDays', pendingWindowInDays, 7, 366);
    return this.updateKeyMetadata(keyId, (key) => {
      if (key.keyState === 'PendingDeletion') throw keyPendingDeletion(key.keyId);
      key.keyState = 'PendingDeletion';
      key.deleteDate = formatKmsTime(
        new Date(this.clock.now().getTime() + pendingWindowInDays * this.deletionDaySeconds * 1000),
      );
    });
  }

  cancelKeyDeletion(keyId: string): Promise<KeyMetadata> {
    return this.updateKeyMetadata(keyId, (key) => {
      if (key.keyState !== 'PendingDeletion') {
        throw new KmsError(
          409,
          'Rejected.UnexpectedKeyState',
          `The key ${key.keyId} is not pending deletion.`,
        );
      }
      key.keyState = 'Enabled';
      delete key.deleteDate;
    });
  }

  /**
   * Manual rotation: a new version that becomes the primary version. With a
   * `rotationToken` (operator extension) a token already used returns the version
   * it made instead of rotating again, so a retried request rotates exactly once.
   */
  async createKeyVersion(keyId: string, rotationToken?: string): Promise<KeyVersionInfo> {
    let created: StoredKeyVersion | undefined;
    const key = await this.updateKey(keyId, (draft) => {
      created = draft.versions.find((v) => rotationToken && v.rotationToken === rotationToken);
      if (created) return;
      this.requireEnabled(draft);
      if (!isSymmetricSpec(draft.keySpec)) throw onlySymmetric(draft.keyId);
      created = this.rotate(draft);
      if (rotationToken) created.rotationToken = rotationToken;
    });
    return versionInfo(key.keyId, created as StoredKeyVersion);
  }

  listKeyVersions(keyId: string, page: Page): { versions: KeyVersionInfo[]; totalCount: number } {
    const key = this.resolveKey(keyId);
    const { items, totalCount } = paginate(key.versions, page);
    return { versions: items.map((v) => versionInfo(key.keyId, v)), totalCount };
  }

  describeKeyVersion(keyId: string, keyVersionId: string): KeyVersionInfo {
    const key = this.resolveKey(keyId);
    const version = key.versions.find((v) => v.keyVersionId === keyVersionId);
    if (!version) throw keyVersionNotFound(keyVersionId);
    return versionInfo(key.keyId, version);
  }

  updateRotationPolicy(
    keyId: string,
    enableAutomaticRotation: boolean,
    rotationInterval?: string,
  ): Promise<KeyMetadata> {
    const seconds =
      rotationInterval === undefined
        ? undefined
        : parseRotationInterval(rotationInterval, this.minRotationSeconds);
    return this.updateKeyMetadata(keyId, (key) => {
      if (!isSymmetricSpec(key.keySpec)) throw onlySymmetric(key.keyId);
      if (key.keyState === 'PendingDeletion') throw keyPendingDeletion(key.keyId);
      key.automaticRotation = enableAutomaticRotation;
      if (seconds !== undefined) key.rotationIntervalSeconds = seconds;
      if (enableAutomaticRotation && key.rotationIntervalSeconds === undefined) {
        key.rotationIntervalSeconds = 365 * DAY_SECONDS;
      }
    });
  }

  /** Rotates one key if its automatic rotation is due; returns whether it rotated. */
  async rotateIfDue(keyId: string): Promise<boolean> {
    const key = this.resolveKey(keyId);
    const now = this.clock.now().getTime();
    if (key.keyState !== 'Enabled' || (nextRotationMs(key) ?? Infinity) > now) return false;
    let rotated = false;
    await this.updateKey(keyId, (draft) => {
      if (draft.keyState === 'Enabled' && (nextRotationMs(draft) ?? Infinity) <= now) {
        this.rotate(draft);
        rotated = true;
      }
    });
    return rotated;
  }

  /**
   * Rotates keys whose next rotation date has passed and deletes keys whose
   * deletion window has ended. Called on a timer by servers, directly by tests.
   * `rotates` leaves out keys another owner rotates itself (the operator's MasterKeys).
   */
  async runMaintenance(
    options: { rotates?: (keyId: string) => boolean } = {},
  ): Promise<{ rotated: string[]; deleted: string[] }> {
    const now = this.clock.now().getTime();
    const rotated: string[] = [];
    const deleted: string[] = [];
    for (const key of [...this.keys.values()]) {
      if (
        key.keyState === 'PendingDeletion' &&
        key.deleteDate &&
        Date.parse(key.deleteDate) <= now
      ) {
        await this.deleteKeyNow(key.keyId);
        deleted.push(key.keyId);
        continue;
      }
      if (options.rotates && !options.rotates(key.keyId)) continue;
      if (await this.rotateIfDue(key.keyId)) rotated.push(key.keyId);
    }
    return { rotated, deleted };
  }

  // ---- aliases ------------------------------------------------------------

  createAlias(aliasName: string, keyId: string): Promise<void> {
    checkAliasName('AliasName', aliasName);
    return this.mutate(async () => {
      if (this.aliases.has(aliasName)) throw aliasExists(aliasName);
      const key = this.resolveKey(keyId);
      if (key.keyState === 'PendingDeletion') throw keyPendingDeletion(key.keyId);
      await this.saveAlias({ aliasName, keyId: key.keyId, creationDate: this.nowIso() });
    });
  }

  updateAlias(aliasName: string, keyId: string): Promise<void> {
    checkAliasName('AliasName', aliasName);
    return this.mutate(async () => {
      const alias = this.aliases.get(aliasName);
      if (!alias) throw aliasNotFound(aliasName);
      const key = this.resolveKey(keyId);
      if (key.keyState === 'PendingDeletion') throw keyPendingDeletion(key.keyId);
      await this.saveAlias({ ...alias, keyId: key.keyId });
    });
  }

  deleteAlias(aliasName: string): Promise<void> {
    checkAliasName('AliasName', aliasName);
    return this.mutate(async () => {
      if (!this.aliases.has(aliasName)) throw aliasNotFound(aliasName);
      await this.store.deleteAlias(aliasName);
      this.aliases.delete(aliasName);
    });
  }

  listAliases(page: Page): { aliases: StoredAlias[]; totalCount: number } {
    const all = [...this.aliases.values()].sort((a, b) => a.aliasName.localeCompare(b.aliasName));
    const { items, totalCount } = paginate(all, page);
    return { aliases: items, totalCount };
  }

  listAliasesByKeyId(keyId: string, page: Page): { aliases: StoredAlias[]; totalCount: number } {
    const key = this.resolveKey(keyId);
    const all = [...this.aliases.values()]
      .filter((a) => a.keyId === key.keyId)
      .sort((a, b) => a.aliasName.localeCompare(b.aliasName));
    const { items, totalCount } = paginate(all, page);
    return { aliases: items, totalCount };
  }

  // ---- data keys and envelope operations ----------------------------------

  /** Standard flow: wraps under the key's initial version (seed 001). */
  generateDataKey(input: DataKeyInput): Sealed & { plaintext: Buffer } {
    return sealedWithPlaintext(this.prepareDataKey(input), (p) =>
      this.sealStandard(input.keyId, p, input),
    );
  }

  generateDataKeyWithoutPlaintext(input: DataKeyInput): Sealed {
    return sealedOnly(this.prepareDataKey(input), (p) => this.sealStandard(input.keyId, p, input));
  }

  /** Advance flow: wraps under the key's primary version. */
  advanceGenerateDataKey(input: AdvanceDataKeyInput): SealedAdvance & { plaintext: Buffer } {
    return sealedWithPlaintext(this.prepareAdvanceDataKey(input), (p) =>
      this.sealAdvance(input.keyId, p, input.aad),
    );
  }

  /** Extension for the operator: the plaintext never leaves the core. */
  advanceGenerateDataKeyWithoutPlaintext(input: AdvanceDataKeyInput): SealedAdvance {
    return sealedOnly(this.prepareAdvanceDataKey(input), (p) =>
      this.sealAdvance(input.keyId, p, input.aad),
    );
  }

  encrypt(input: Binding & { keyId: string; plaintext: Buffer; dryRun?: boolean }): Sealed {
    checkPlaintext(input.plaintext);
    checkAad(input.aad);
    const key = this.usableSymmetricKey(input.keyId);
    if (input.dryRun) throw dryRunOperation();
    return this.sealStandard(key.keyId, input.plaintext, input);
  }

  advanceEncrypt(input: {
    keyId: string;
    plaintext: Buffer;
    aad?: Buffer;
    dryRun?: boolean;
  }): SealedAdvance {
    checkPlaintext(input.plaintext);
    checkAad(input.aad);
    const key = this.usableSymmetricKey(input.keyId);
    if (input.dryRun) throw dryRunOperation();
    return this.sealAdvance(key.keyId, input.plaintext, input.aad);
  }

  decrypt(input: Binding & { ciphertextBlob: Buffer; dryRun?: boolean }): Opened {
    checkAad(input.aad);
    const { parsed, live } = this.locateBlob(input.ciphertextBlob, 'CiphertextBlob');
    if (parsed.format !== BlobFormat.Standard) {
      throw invalidParameter(
        'CiphertextBlob',
        'It was produced by the Advance flow; use AdvanceDecrypt.',
      );
    }
    const opened = this.openWith(live, parsed, bindingBytes(input), 'CiphertextBlob');
    return input.dryRun ? discardForDryRun(opened.plaintext) : opened;
  }

  /** Opens Advance blobs, and Standard blobs when Aad is their canonical context. */
  advanceDecrypt(input: { ciphertextBlob: Buffer; aad?: Buffer; dryRun?: boolean }): Opened & {
    algorithm: 'AES_GCM';
  } {
    checkAad(input.aad);
    const { parsed, live } = this.locateBlob(input.ciphertextBlob, 'CiphertextBlob');
    const opened = this.openWith(live, parsed, input.aad ?? EMPTY, 'CiphertextBlob');
    if (input.dryRun) discardForDryRun(opened.plaintext);
    return { ...opened, algorithm: 'AES_GCM' };
  }

  /** Re-wraps a Standard blob under the destination key's primary version. */
  reEncrypt(input: {
    ciphertextBlob: Buffer;
    sourceEncryptionContext?: EncryptionContext;
    destinationKeyId: string;
    destinationEncryptionContext?: EncryptionContext;
    dryRun?: boolean;
  }): Sealed & { sourceKeyId: string; sourceKeyVersionId: string } {
    const { parsed, live } = this.locateBlob(input.ciphertextBlob, 'CiphertextBlob');
    if (parsed.format !== BlobFormat.Standard) {
      throw invalidParameter('CiphertextBlob', 'It was produced by the Advance flow.');
    }
    const destination = this.usableSymmetricKey(input.destinationKeyId, 'DestinationKeyId');
    const source = this.openWith(
      live,
      parsed,
      contextBytes(input.sourceEncryptionContext),
      'CiphertextBlob',
    );
    if (input.dryRun) discardForDryRun(source.plaintext);
    try {
      const primary = this.versionOf(destination, 'primary');
      const { blob } = sealBlob(
        primary.aes as KeyObject,
        primary.keyVersionId,
        BlobFormat.Standard,
        source.plaintext,
        contextBytes(input.destinationEncryptionContext),
      );
      return {
        keyId: destination.keyId,
        keyVersionId: primary.keyVersionId,
        ciphertextBlob: blob,
        sourceKeyId: source.keyId,
        sourceKeyVersionId: source.keyVersionId,
      };
    } finally {
      zero(source.plaintext);
    }
  }

  /**
   * Extension for the rotation reconciler: opens a blob of either flow with its
   * AAD and seals the same plaintext under its key's primary version in the
   * Advance flow with `destinationAad`. The plaintext never leaves the core.
   */
  rewrapToPrimary(input: {
    ciphertextBlob: Buffer;
    sourceAad?: Buffer;
    destinationAad?: Buffer;
  }): SealedAdvance {
    checkAad(input.sourceAad, 'SourceAad');
    checkAad(input.destinationAad, 'DestinationAad');
    const { parsed, live } = this.locateBlob(input.ciphertextBlob, 'CiphertextBlob');
    const opened = this.openWith(live, parsed, input.sourceAad ?? EMPTY, 'CiphertextBlob');
    try {
      return this.sealAdvance(opened.keyId, opened.plaintext, input.destinationAad);
    } finally {
      zero(opened.plaintext);
    }
  }

  // ---- internals ----------------------------------------------------------

  private prepareDataKey(input: DataKeyInput): Buffer {
    checkAad(input.aad);
    const bytes =
      input.numberOfBytes !== undefined
        ? checkRange('NumberOfBytes', input.numberOfBytes, 1, MAX_DATA_KEY_BYTES)
        : dataKeySpecBytes(input.keySpec);
    this.usableSymmetricKey(input.keyId);
    if (input.dryRun) throw dryRunOperation();
    return randomKeyBytes(bytes);
  }

  private prepareAdvanceDataKey(input: AdvanceDataKeyInput): Buffer {
    checkRange('NumberOfBytes', input.numberOfBytes, 1, MAX_DATA_KEY_BYTES);
    checkAad(input.aad);
    this.usableSymmetricKey(input.keyId);
    if (input.dryRun) throw dryRunOperation();
    return randomKeyBytes(input.numberOfBytes);
  }

  private sealStandard(
    keyId: string,
    plaintext: Buffer,
    binding: Binding,
  ): Sealed & { iv: Buffer } {
    const key = this.usableSymmetricKey(keyId);
    const initial = this.versionOf(key, 'initial');
    const { blob, iv } = sealBlob(
      initial.aes as KeyObject,
      initial.keyVersionId,
      BlobFormat.Standard,
      plaintext,
      bindingBytes(binding),
    );
    return { keyId: key.keyId, keyVersionId: initial.keyVersionId, ciphertextBlob: blob, iv };
  }

  private sealAdvance(keyId: string, plaintext: Buffer, aad: Buffer | undefined): SealedAdvance {
    const key = this.usableSymmetricKey(keyId);
    const primary = this.versionOf(key, 'primary');
    const { blob, iv } = sealBlob(
      primary.aes as KeyObject,
      primary.keyVersionId,
      BlobFormat.Advance,
      plaintext,
      aad ?? EMPTY,
    );
    return {
      keyId: key.keyId,
      keyVersionId: primary.keyVersionId,
      ciphertextBlob: blob,
      algorithm: 'AES_GCM',
      iv,
    };
  }

  private locateBlob(blob: Buffer, parameter: string): { parsed: ParsedBlob; live: LiveVersion } {
    const parsed = parseBlob(blob);
    if (!parsed) throw invalidCiphertext(parameter);
    const live = this.versions.get(parsed.keyVersionId);
    if (!live) throw keyNotFound(parsed.keyVersionId);
    const key = this.keys.get(live.keyId) as StoredKey;
    this.requireEnabled(key);
    return { parsed, live };
  }

  private openWith(live: LiveVersion, parsed: ParsedBlob, aad: Buffer, parameter: string): Opened {
    const plaintext = live.aes ? openBlob(live.aes, parsed, aad) : undefined;
    if (!plaintext) throw invalidCiphertext(parameter);
    return { keyId: live.keyId, keyVersionId: live.keyVersionId, plaintext };
  }

  /** Public view of a blob's IV, e.g. for the Secret layout of the Advance flow. */
  static ivOfBlob(blob: Buffer): Buffer | undefined {
    const parsed = parseBlob(blob);
    return parsed ? ivOf(parsed) : undefined;
  }

  private usableSymmetricKey(keyIdOrAlias: string, parameter = 'KeyId'): StoredKey {
    const key = this.resolveKey(keyIdOrAlias, parameter);
    if (!isSymmetricSpec(key.keySpec)) throw onlySymmetric(key.keyId);
    this.requireEnabled(key);
    return key;
  }

  private requireEnabled(key: StoredKey): void {
    if (key.keyState === 'Disabled') throw keyDisabled(key.keyId);
    if (key.keyState === 'PendingDeletion') throw keyPendingDeletion(key.keyId);
  }

  /** Accepts a key id, an `alias/...` name, or either as an ARN. */
  resolveKey(keyIdOrAlias: string, parameter = 'KeyId'): StoredKey {
    if (keyIdOrAlias.length === 0 || keyIdOrAlias.length > MAX_KEY_ID_CHARS) {
      throw invalidParameter(parameter);
    }
    const arn = /^acs:kms:[^:]*:[^:]*:(key\/(.+)|(alias\/.+))$/.exec(keyIdOrAlias);
    const ref = arn ? (arn[2] ?? arn[3]) : keyIdOrAlias;
    if (ref.startsWith('alias/')) {
      const alias = this.aliases.get(ref);
      if (!alias) throw aliasNotFound(ref);
      return this.keys.get(alias.keyId) ?? throwError(keyNotFound(alias.keyId));
    }
    return this.keys.get(ref) ?? throwError(keyNotFound(ref));
  }

  private versionOf(key: StoredKey, which: 'initial' | 'primary'): LiveVersion {
    const stored = which === 'initial' ? key.versions[0] : key.versions[key.versions.length - 1];
    return this.versions.get(stored.keyVersionId) as LiveVersion;
  }

  private newVersion(key: StoredKey, creationDate: string, material: Buffer): StoredKeyVersion {
    const keyVersionId = randomUUID();
    return {
      keyVersionId,
      creationDate,
      wrappedMaterial: this.rootKey.wrap(material, key.keyId, keyVersionId),
    };
  }

  /** Only symmetric keys rotate, so their material is random bytes, made at once. */
  private rotate(key: StoredKey): StoredKeyVersion {
    if (!isSymmetricSpec(key.keySpec)) throw onlySymmetric(key.keyId);
    const now = this.nowIso();
    const material = randomKeyBytes(SYMMETRIC_KEY_SPECS[key.keySpec]);
    let version: StoredKeyVersion;
    try {
      version = this.newVersion(key, now, material);
    } finally {
      zero(material);
    }
    key.versions.push(version);
    key.lastRotationDate = now;
    return version;
  }

  private liveVersion(key: StoredKey, version: StoredKeyVersion): LiveVersion {
    const live: LiveVersion = { keyId: key.keyId, keyVersionId: version.keyVersionId };
    if (isSymmetricSpec(key.keySpec)) {
      live.aes = toSecretKey(
        this.rootKey.unwrap(version.wrappedMaterial, key.keyId, version.keyVersionId),
      );
    }
    return live;
  }

  private updateKey(keyId: string, change: (draft: StoredKey) => void): Promise<StoredKey> {
    return this.mutate(async () => {
      const draft = structuredClone(this.resolveKey(keyId));
      change(draft);
      await this.saveKey(draft);
      return draft;
    });
  }

  private async updateKeyMetadata(
    keyId: string,
    change: (draft: StoredKey) => void,
  ): Promise<KeyMetadata> {
    return this.metadataOf(await this.updateKey(keyId, change));
  }

  /** Writes first, then updates the cache: nothing is visible before it is durable. */
  private async saveKey(key: StoredKey): Promise<void> {
    const fresh = key.versions.filter((v) => !this.versions.has(v.keyVersionId));
    const live = fresh.map((v) => this.liveVersion(key, v));
    await this.store.putKey(key);
    this.keys.set(key.keyId, key);
    for (const v of live) this.versions.set(v.keyVersionId, v);
  }

  private async saveAlias(alias: StoredAlias): Promise<void> {
    await this.store.putAlias(alias);
    this.aliases.set(alias.aliasName, alias);
  }

  private deleteKeyNow(keyId: string): Promise<void> {
    return this.mutate(async () => {
      const key = this.keys.get(keyId);
      if (!key) return;
      for (const alias of [...this.aliases.values()].filter((a) => a.keyId === keyId)) {
        await this.store.deleteAlias(alias.aliasName);
        this.aliases.delete(alias.aliasName);
      }
      await this.store.deleteKey(keyId);
      this.keys.delete(keyId);
      for (const v of key.versions) this.versions.delete(v.keyVersionId);
    });
  }

  /** Serializes mutations so the cache and the store never disagree. */
  private mutate<T>(work: () => Promise<T>): Promise<T> {
    const run = this.mutationTail.then(work, work);
    this.mutationTail = run.catch(() => undefined);
    return run;
  }

  private nowIso(): string {
    return formatKmsTime(this.clock.now());
  }

  private metadataOf(key: StoredKey): KeyMetadata {
    const next = nextRotationMs(key);
    const rotation = !key.automaticRotation
      ? 'Disabled'
      : key.keyState === 'Enabled'
        ? 'Enabled'
        : 'Suspended';
    return {
      keyId: key.keyId,
      description: key.description,
      keySpec: key.keySpec,
      keyUsage: key.keyUsage,
      keyState: key.keyState,
      origin: 'Aliyun_KMS',
      protectionLevel: 'SOFTWARE',
      creationDate: key.creationDate,
      deleteDate: key.deleteDate,
      primaryKeyVersion: key.versions[key.versions.length - 1].keyVersionId,
      lastRotationDate: key.lastRotationDate ?? key.creationDate,
      nextRotationDate:
        rotation === 'Enabled' && next !== undefined ? formatKmsTime(new Date(next)) : undefined,
      automaticRotation: rotation,
      rotationInterval:
        key.rotationIntervalSeconds !== undefined ? `${key.rotationIntervalSeconds}s` : undefined,
      dkmsInstanceId: this.inInstance(key) ? this.kmsInstance?.id : undefined,
    };
  }
}

function nextRotationMs(key: StoredKey): number | undefined {
  if (!key.automaticRotation || key.rotationIntervalSeconds === undefined) return undefined;
  const last = Date.parse(key.lastRotationDate ?? key.creationDate);
  return last + key.rotationIntervalSeconds * 1000;
}

function versionInfo(keyId: string, version: StoredKeyVersion): KeyVersionInfo {
  return { keyId, keyVersionId: version.keyVersionId, creationDate: version.creationDate };
}

function checkKeySpec(value: string): MasterKeySpec {
  if (
    Object.hasOwn(SYMMETRIC_KEY_SPECS, value) ||
    (ASYMMETRIC_KEY_SPECS as readonly string[]).includes(value)
  ) {
    return value as MasterKeySpec;
  }
  throw invalidParameter('KeySpec');
}

function checkKeyUsage(value: string, spec: MasterKeySpec): KeyUsage {
  const allowed = isSymmetricSpec(spec) ? ['ENCRYPT/DECRYPT'] : ['ENCRYPT/DECRYPT', 'SIGN/VERIFY'];
  if (!allowed.includes(value)) throw invalidParameter('KeyUsage');
  return value as KeyUsage;
}

/** A fresh data key sealed and handed back with its ciphertext; zeroed if sealing fails. */
function sealedWithPlaintext<T>(
  plaintext: Buffer,
  seal: (plaintext: Buffer) => T,
): T & { plaintext: Buffer } {
  try {
    return { ...seal(plaintext), plaintext };
  } catch (err) {
    zero(plaintext);
    throw err;
  }
}

/** A fresh data key sealed; the plaintext never leaves the core and is zeroed. */
function sealedOnly<T>(plaintext: Buffer, seal: (plaintext: Buffer) => T): T {
  try {
    return seal(plaintext);
  } finally {
    zero(plaintext);
  }
}

function dataKeySpecBytes(keySpec: string | undefined): number {
  if (keySpec === undefined) return 32;
  const bytes = ownEntry(DATA_KEY_SPEC_BYTES, keySpec);
  if (bytes === undefined) throw invalidParameter('KeySpec');
  return bytes;
}

function checkPlaintext(plaintext: Buffer): void {
  if (plaintext.length < 1 || plaintext.length > MAX_PLAINTEXT_BYTES) {
    throw invalidParameter('Plaintext', `It must be 1 to ${MAX_PLAINTEXT_BYTES} bytes.`);
  }
}

function checkAad(aad: Buffer | undefined, parameter = 'Aad'): void {
  if (aad && aad.length > MAX_AAD_BYTES) {
    throw invalidParameter(parameter, `It must be at most ${MAX_AAD_BYTES} bytes.`);
  }
}

/** Raw Aad (Instance API) wins; otherwise the canonical EncryptionContext (OpenAPI). */
const bindingBytes = (binding: Binding): Buffer =>
  binding.aad ?? contextBytes(binding.encryptionContext);

const contextBytes = (context: EncryptionContext | undefined): Buffer => {
  const canonical = canonicalEncryptionContext(context);
  return canonical === '' ? EMPTY : Buffer.from(canonical, 'utf8');
};

/** New key material; asymmetric pairs are generated off the event loop. */
async function generateMaterial(spec: MasterKeySpec): Promise<Buffer> {
  if (isSymmetricSpec(spec)) return randomKeyBytes(SYMMETRIC_KEY_SPECS[spec]);
  const privateKey = await new Promise<KeyObject>((resolve, reject) => {
    const done = (err: Error | null, _pub: KeyObject, key: KeyObject) =>
      err ? reject(err) : resolve(key);
    if (spec === 'RSA_2048') generateKeyPair('rsa', { modulusLength: 2048 }, done);
    else generateKeyPair('ec', { namedCurve: 'P-256' }, done);
  });
  return privateKey.export({ format: 'der', type: 'pkcs8' });
}

/** A dry run checks everything the real call checks (the blob opens), then answers DryRunOperation. */
function discardForDryRun(plaintext: Buffer): never {
  zero(plaintext);
  throw dryRunOperation();
}

function throwError(error: Error): never {
  throw error;
}

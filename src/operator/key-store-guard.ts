import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../common/logger';
import {
  KeyStoreError,
  KmsCore,
  RootKey,
  loadOrCreateRootKey,
  rootKeyFile,
  type KmsCoreOptions,
  type RootKeyLocation,
} from '../kms';
import { RootKeyEvent } from '../api/conditions';
import type { EventRecorder } from '../runtime/events';
import { Informer } from '../runtime/informer';
import type { KubeClient, KubeObject } from '../runtime/kube-client';
import { SealError } from '../seal/seal-error';
import { ROOT_KEY_SECRET, SecretKeyStore, rootKeySecret } from './secret-key-store';

/** How often a store that cannot be opened is tried again (changes to it retry at once). */
const RETRY_MS = 5_000;
/** Changes to the operator's Secrets arrive in bursts (a restore, a rotation): one reload each. */
const SETTLE_MS = 300;

export interface KeyStoreGuardOptions {
  client: KubeClient;
  namespace: string;
  rootKeyFile?: string;
  /** Where the root key is when it is not a file or the plain Secret (a sealed Secret). */
  rootKeyLocation?: RootKeyLocation;
  /**
   * How often the root key is read again although nothing changed: a seal's KMS
   * key can be disabled without any change in the cluster. Off by default.
   */
  recheckIntervalMs?: number;
  /** How soon a store that cannot be opened is tried again (default 5 s). */
  retryMs?: number;
  logger: Logger;
  /** Seal failures are named in Warning events on the root-key Secret. */
  events?: EventRecorder;
  /** Key ids the cluster's objects name (MasterKeys' status): each must be in the store. */
  expectedKeyIds: () => Iterable<{ keyId: string; owner: string }>;
  /** The store became usable again after a problem: re-check what depends on it. */
  onRecovered: () => void;
}

/**
 * The operator's own state (key store and root key, Secrets of its namespace) is
 * never re-created or overwritten to get past damage: a missing root key beside
 * stored keys, an unreadable or altered record, a key that a MasterKey names but
 * the store lacks, each make the operator not Ready with a message naming the
 * problem, until the state is put back (e.g. from a backup). Every change to the
 * namespace's Secrets reloads the core and re-checks.
 */
export class KeyStoreGuard {
  private current?: Problem;
  private rootKeyDigest?: Buffer;
  private secrets?: Informer<KubeObject>;
  private timer?: NodeJS.Timeout;
  private recheck?: NodeJS.Timeout;
  private checking: Promise<void> = Promise.resolve();
  private core?: KmsCore;
  private wake?: () => void;
  /** Changes seen to the namespace's Secrets, and how many of them the core has loaded. */
  private changes = 0;
  /**
   * Whether the root key must be read again at the next check: its Secret changed,
   * the periodic re-check came, or the last read failed. Other Secrets of the
   * namespace change with every rotation; re-reading (with a seal: a KMS Decrypt)
   * for each would be work without news.
   */
  private rootKeyReadDue = true;
  private loadedChanges = 0;

  constructor(private readonly options: KeyStoreGuardOptions) {}

  /** What is wrong with the stored state, or undefined when nothing is. */
  get problem(): string | undefined {
    return this.current?.text;
  }

  private location(): RootKeyLocation {
    const { client, namespace, rootKeyFile: file, rootKeyLocation } = this.options;
    if (rootKeyLocation) return rootKeyLocation;
    return file ? rootKeyFile(file) : rootKeySecret(client, namespace);
  }

  /**
   * Reads the root key again now and throws when it no longer opens to the one
   * in use: with a seal, a term does not start on a revoked KMS key.
   */
  async verifyRootKey(): Promise<void> {
    const problem = await this.rootKeyProblem();
    if (!problem) return;
    this.report(problem);
    throw new KeyStoreError(problem.text);
  }

  /**
   * Opens the core over the Secret key store, waiting (not Ready) while the stored
   * state is damaged; starts watching the namespace's Secrets.
   */
  async open(coreOptions: Omit<KmsCoreOptions, 'store' | 'rootKey'> = {}): Promise<KmsCore> {
    this.watchSecrets();
    const store = new SecretKeyStore(this.options.client, this.options.namespace);
    for (;;) {
      try {
        const material = await loadOrCreateRootKey(this.location(), store);
        this.rootKeyDigest = digest(material);
        const seen = this.changes;
        this.core = await KmsCore.open({
          ...coreOptions,
          store,
          rootKey: new RootKey(material),
          storeMayHaveChanged: () => this.changes !== this.loadedChanges,
        });
        this.loadedChanges = seen;
        this.report(undefined);
        this.startRecheck();
        return this.core;
      } catch (err) {
        if (!(err instanceof KeyStoreError)) throw err;
        this.report(problemOf(err));
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, this.options.retryMs ?? RETRY_MS);
      });
    }
  }

  stop(): void {
    this.secrets?.stop();
    if (this.timer) clearTimeout(this.timer);
    if (this.recheck) clearInterval(this.recheck);
    this.wake?.();
  }

  private startRecheck(): void {
    const every = this.options.recheckIntervalMs;
    if (!every || this.recheck) return;
    this.recheck = setInterval(() => {
      this.rootKeyReadDue = true;
      this.schedule();
    }, every);
    this.recheck.unref();
  }

  /** Re-checks soon (changes come in bursts). */
  private schedule(): void {
    if (!this.core) return this.wake?.();
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.checking = this.checking.then(() => this.check());
    }, SETTLE_MS);
    this.timer.unref();
  }

  private watchSecrets(): void {
    const { client, namespace, logger } = this.options;
    this.secrets = new Informer(
      client,
      { path: `/api/v1/namespaces/${namespace}/secrets` },
      logger,
    );
    this.secrets.on((_event, secret) => {
      this.changes++;
      if (secret.metadata.name === ROOT_KEY_SECRET) this.rootKeyReadDue = true;
      this.schedule();
    });
    this.secrets.start();
  }

  /** Reload the core from the store and compare it with the root key in use and the cluster. */
  private async check(): Promise<void> {
    const core = this.core;
    if (!core) return;
    try {
      const problem = (await this.rootKeyProblemIfDue()) ?? (await this.storeProblem(core));
      const recovered = this.current !== undefined && problem === undefined;
      this.report(problem);
      if (recovered) this.options.onRecovered();
    } catch (err) {
      // The API server being away is not damage: the next change or retry checks again.
      this.options.logger.warn({ err: (err as Error).message }, 'key store check failed');
      setTimeout(() => this.schedule(), RETRY_MS).unref();
    }
  }

  /** A root key in a file is read at every check (no watch tells when it changes). */
  private async rootKeyProblemIfDue(): Promise<Problem | undefined> {
    const due = this.rootKeyReadDue || this.current !== undefined || !!this.options.rootKeyFile;
    if (!due) return undefined;
    this.rootKeyReadDue = false;
    try {
      return await this.rootKeyProblem();
    } catch (err) {
      this.rootKeyReadDue = true; // not read: the retry reads it
      throw err;
    }
  }

  private async rootKeyProblem(): Promise<Problem | undefined> {
    const location = this.location();
    let material: Buffer | undefined;
    try {
      material = await location.read();
    } catch (err) {
      if (err instanceof KeyStoreError) return problemOf(err);
      throw err;
    }
    if (!material) {
      return {
        text: `${location.description} is missing (this process still holds the root key; restore it from a backup before any restart)`,
      };
    }
    const same = timingSafeEqual(digest(material), this.rootKeyDigest as Buffer);
    material.fill(0);
    return same
      ? undefined
      : {
          text: `${location.description} differs from the root key in use: restore it from a backup`,
        };
  }

  private async storeProblem(core: KmsCore): Promise<Problem | undefined> {
    try {
      const seen = this.changes;
      await core.reload();
      this.loadedChanges = seen;
    } catch (err) {
      if (err instanceof KeyStoreError) return problemOf(err);
      throw err;
    }
    for (const { keyId, owner } of this.options.expectedKeyIds()) {
      if (!core.hasKey(keyId)) {
        return {
          text: `key ${keyId} of ${owner} is missing from the key store: restore it from a backup`,
        };
      }
    }
    return undefined;
  }

  private report(problem: Problem | undefined): void {
    const previous = this.current;
    if (problem?.text === previous?.text) return;
    this.current = problem;
    const { logger, events, namespace } = this.options;
    if (problem) logger.error({ problem: problem.text }, 'key store unusable, not Ready');
    else logger.info('key store usable');
    if (!events) return;
    const secret: KubeObject = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: ROOT_KEY_SECRET, namespace },
    };
    if (problem?.sealReason) {
      events.record(secret, 'Warning', problem.sealReason, problem.text);
    } else if (!problem && previous?.sealReason) {
      events.record(secret, 'Normal', RootKeyEvent.SealRecovered, 'The root key unseals again.');
    }
  }
}

/** What is wrong with the stored state: the text /readyz and the log give, and a seal's reason. */
interface Problem {
  text: string;
  sealReason?: string;
}

const problemOf = (err: KeyStoreError): Problem => ({
  text: err.message,
  sealReason: err instanceof SealError ? err.reason : undefined,
});

const digest = (material: Buffer): Buffer => createHash('sha256').update(material).digest();

/** The keys that MasterKeys (not being deleted) have: the store must hold each. */
export function* keysNamedByMasterKeys(
  masterKeys: {
    metadata: { name: string; deletionTimestamp?: string };
    status?: { keyId?: string };
  }[],
): Iterable<{ keyId: string; owner: string }> {
  for (const mk of masterKeys) {
    const keyId = mk.status?.keyId;
    if (keyId && !mk.metadata.deletionTimestamp) {
      yield { keyId, owner: `MasterKey ${mk.metadata.name}` };
    }
  }
}

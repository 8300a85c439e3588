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
import { Informer } from '../runtime/informer';
import type { KubeClient, KubeObject } from '../runtime/kube-client';
import { SecretKeyStore, rootKeySecret } from './secret-key-store';

/** How often a store that cannot be opened is tried again (changes to it retry at once). */
const RETRY_MS = 5_000;
/** Changes to the operator's Secrets arrive in bursts (a restore, a rotation): one reload each. */
const SETTLE_MS = 300;

export interface KeyStoreGuardOptions {
  client: KubeClient;
  namespace: string;
  rootKeyFile?: string;
  logger: Logger;
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
  private problemText?: string;
  private rootKeyDigest?: Buffer;
  private secrets?: Informer<KubeObject>;
  private timer?: NodeJS.Timeout;
  private checking: Promise<void> = Promise.resolve();
  private core?: KmsCore;
  private wake?: () => void;
  /** Changes seen to the namespace's Secrets, and how many of them the core has loaded. */
  private changes = 0;
  private loadedChanges = 0;

  constructor(private readonly options: KeyStoreGuardOptions) {}

  /** What is wrong with the stored state, or undefined when nothing is. */
  get problem(): string | undefined {
    return this.problemText;
  }

  private location(): RootKeyLocation {
    const { client, namespace, rootKeyFile: file } = this.options;
    return file ? rootKeyFile(file) : rootKeySecret(client, namespace);
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
        return this.core;
      } catch (err) {
        if (!(err instanceof KeyStoreError)) throw err;
        this.report(err.message);
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, RETRY_MS);
      });
    }
  }

  stop(): void {
    this.secrets?.stop();
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
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
    this.secrets.on(() => {
      this.changes++;
      this.schedule();
    });
    this.secrets.start();
  }

  /** Reload the core from the store and compare it with the root key in use and the cluster. */
  private async check(): Promise<void> {
    const core = this.core;
    if (!core) return;
    try {
      const problem = (await this.rootKeyProblem()) ?? (await this.storeProblem(core));
      const recovered = this.problemText !== undefined && problem === undefined;
      this.report(problem);
      if (recovered) this.options.onRecovered();
    } catch (err) {
      // The API server being away is not damage: the next change or retry checks again.
      this.options.logger.warn({ err: (err as Error).message }, 'key store check failed');
      setTimeout(() => this.schedule(), RETRY_MS).unref();
    }
  }

  private async rootKeyProblem(): Promise<string | undefined> {
    const location = this.location();
    let material: Buffer | undefined;
    try {
      material = await location.read();
    } catch (err) {
      if (err instanceof KeyStoreError) return err.message;
      throw err;
    }
    if (!material) {
      return `${location.description} is missing (this process still holds the root key; restore it from a backup before any restart)`;
    }
    const same = timingSafeEqual(digest(material), this.rootKeyDigest as Buffer);
    material.fill(0);
    return same
      ? undefined
      : `${location.description} differs from the root key in use: restore it from a backup`;
  }

  private async storeProblem(core: KmsCore): Promise<string | undefined> {
    try {
      const seen = this.changes;
      await core.reload();
      this.loadedChanges = seen;
    } catch (err) {
      if (err instanceof KeyStoreError) return err.message;
      throw err;
    }
    for (const { keyId, owner } of this.options.expectedKeyIds()) {
      if (!core.hasKey(keyId)) {
        return `key ${keyId} of ${owner} is missing from the key store: restore it from a backup`;
      }
    }
    return undefined;
  }

  private report(problem: string | undefined): void {
    if (problem === this.problemText) return;
    this.problemText = problem;
    if (problem) this.options.logger.error({ problem }, 'key store unusable, not Ready');
    else this.options.logger.info('key store usable');
  }
}

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

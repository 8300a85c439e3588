import type { Logger } from '../common/logger';
import { KubeApiError, type KubeClient, type KubeObject } from './kube-client';

export type InformerEvent = 'add' | 'update' | 'delete';
export type InformerHandler<T extends KubeObject> = (
  event: InformerEvent,
  object: T,
  old?: T,
) => void;

export interface InformerOptions<T extends KubeObject = KubeObject> {
  /** Collection path, e.g. /apis/kms.datakey.io/v1alpha1/datakeys. */
  path: string;
  labelSelector?: string;
  /** Server-side watch timeout; the watch is renewed from the last resourceVersion. */
  watchTimeoutSeconds?: number;
  /** Restart the watch when nothing (not even a bookmark) arrived for this long. */
  watchdogMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Drops, in place, fields no reader of this cache uses, before an object is cached. */
  strip?: (object: T) => void;
}

/**
 * List-then-watch cache of one resource. It re-lists on 410 Gone and restarts
 * with exponential backoff and jitter on any error; a watchdog restarts a watch
 * that went silent. Handlers should only enqueue keys.
 */
export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private resourceVersion = '';
  private abort?: AbortController;
  private stopped = false;
  private failures = 0;
  /** A re-list after an error or a 410 is under way (its end is logged). */
  private recovering = false;
  private lastActivity = Date.now();
  private watchdog?: NodeJS.Timeout;
  private syncedResolve!: () => void;
  readonly synced: Promise<void> = new Promise((resolve) => (this.syncedResolve = resolve));

  constructor(
    private readonly client: KubeClient,
    private readonly options: InformerOptions<T>,
    private readonly logger: Logger,
  ) {}

  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  start(): void {
    const watchdogMs = this.options.watchdogMs ?? 10 * 60_000;
    this.watchdog = setInterval(
      () => {
        if (Date.now() - this.lastActivity > watchdogMs && this.abort) {
          this.logger.warn({ path: this.options.path }, 'watch silent too long, restarting');
          this.abort.abort();
        }
      },
      Math.min(watchdogMs, 30_000),
    );
    this.watchdog.unref();
    void this.relist();
  }

  stop(): void {
    this.stopped = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.abort?.abort();
  }

  private async relist(): Promise<void> {
    if (this.stopped) return;
    try {
      const list = await this.client.listPaged<T>(this.options.path, {
        labelSelector: this.options.labelSelector,
      });
      this.replaceAll(list.items);
      this.resourceVersion = list.metadata.resourceVersion;
      if (this.recovering) {
        this.logger.info(
          {
            path: this.options.path,
            items: list.items.length,
            resourceVersion: this.resourceVersion,
          },
          'informer re-listed',
        );
      }
      this.recovering = false;
      this.failures = 0;
      this.syncedResolve();
      await this.startWatch();
    } catch (err) {
      this.retry(err);
    }
  }

  private replaceAll(items: T[]): void {
    const seen = new Set<string>();
    for (const item of items) {
      const key = keyOf(item);
      seen.add(key);
      this.apply('ADDED', item);
    }
    for (const [key, old] of this.cache) {
      if (!seen.has(key)) {
        this.cache.delete(key);
        this.emit('delete', old);
      }
    }
  }

  private async startWatch(): Promise<void> {
    if (this.stopped) return;
    this.lastActivity = Date.now();
    const timeout = this.options.watchTimeoutSeconds ?? 300;
    let ended = false;
    const done = (err?: unknown) => {
      if (ended) return;
      ended = true;
      this.abort = undefined;
      if (this.stopped) return;
      if (err && !isAbort(err)) return this.retry(err);
      // A normal end (server timeout, watchdog): resume from the last resourceVersion.
      void this.startWatch().catch((e) => this.retry(e));
    };
    this.abort = await this.client.watch(
      this.options.path,
      {
        watch: true,
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        labelSelector: this.options.labelSelector,
        // Jitter so that many watches do not renew at the same instant.
        timeoutSeconds: Math.round(timeout * (0.8 + Math.random() * 0.4)),
      },
      (type, object) => {
        this.lastActivity = Date.now();
        if (type === 'ERROR') {
          const status = object as unknown as { code?: number; message?: string };
          // Ended with the error first: aborting ends the stream at once, and that
          // end alone would read as a normal one, resuming from the same (e.g.
          // expired) resourceVersion again and again.
          const stream = this.abort;
          done(new KubeApiError(status.code ?? 500, 'WatchError', status.message ?? 'watch error'));
          stream?.abort();
          return;
        }
        if (object?.metadata?.resourceVersion)
          this.resourceVersion = object.metadata.resourceVersion;
        if (type !== 'BOOKMARK') this.apply(type, object as T);
      },
      done,
    );
  }

  private apply(type: string, object: T): void {
    // managedFields are often the larger part of an object and nothing here reads
    // them: the cache does not keep them (as client-go's informers commonly do).
    delete (object.metadata as { managedFields?: unknown }).managedFields;
    this.options.strip?.(object);
    const key = keyOf(object);
    const old = this.cache.get(key);
    if (type === 'DELETED') {
      this.cache.delete(key);
      this.emit('delete', object);
      return;
    }
    if (old && old.metadata.resourceVersion === object.metadata.resourceVersion) return;
    this.cache.set(key, object);
    this.emit(old ? 'update' : 'add', object, old);
  }

  private emit(event: InformerEvent, object: T, old?: T): void {
    for (const handler of this.handlers) {
      try {
        handler(event, object, old);
      } catch (err) {
        this.logger.error(
          { err: (err as Error).message, path: this.options.path },
          'informer handler failed',
        );
      }
    }
  }

  private retry(err: unknown): void {
    if (this.stopped) return;
    // 410 arrives as an ERROR event or, when the watch request itself is refused, as its status.
    const gone = statusOf(err) === 410;
    this.recovering = true;
    const base = this.options.backoffBaseMs ?? 500;
    const max = this.options.backoffMaxMs ?? 30_000;
    const delay = gone
      ? 0
      : Math.min(max, base * 2 ** Math.min(this.failures, 20)) * (0.5 + Math.random());
    this.failures += gone ? 0 : 1;
    this.logger.warn(
      { path: this.options.path, err: (err as Error)?.message, retryInMs: Math.round(delay) },
      gone ? 'watch expired (410), re-listing' : 'informer error, re-listing after backoff',
    );
    setTimeout(() => void this.relist(), delay).unref();
  }
}

export function keyOf(object: KubeObject): string {
  const { namespace, name } = object.metadata;
  return namespace ? `${namespace}/${name}` : name;
}

function statusOf(err: unknown): number | undefined {
  if (err instanceof KubeApiError) return err.status;
  const code = (err as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

function isAbort(err: unknown): boolean {
  return (
    (err as { name?: string })?.name === 'AbortError' ||
    (err as { type?: string })?.type === 'aborted'
  );
}

import type { Logger } from '../common/logger';
import type { Informer, InformerEvent } from './informer';
import type { KubeObject } from './kube-client';
import { queueResultOf, type ReconcileOutcome } from './outcome';
import { WorkQueue, runWorkers } from './workqueue';

/** Maps a change of a watched object to the keys of the controller's own objects to reconcile. */
export interface Watch<T extends KubeObject = KubeObject> {
  informer: Informer<T>;
  keysFor(event: InformerEvent, object: T, old: T | undefined): string[];
}

/** What the manager runs: a reconcile with its watches beside it (controller-runtime's builder). */
export interface ManagedController {
  name: string;
  reconcile(key: string): Promise<ReconcileOutcome>;
  /** Every key to reconcile when a leadership term starts. */
  allKeys(): string[];
  // Each watch is typed by its own informer; the manager only passes objects through.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  watches: Watch<any>[];
}

/** Work the leader does besides reconciling, every `intervalMs` while it leads. */
export interface LeaderTask {
  name: string;
  intervalMs: number;
  run(): Promise<void>;
}

export interface ManagerHooks {
  /** Before each term's first reconcile; retried every second until it succeeds or the term ends. */
  prepareTerm?(): Promise<void>;
  reconciled?(controller: string, outcome: ReconcileOutcome | 'error', seconds: number): void;
  failed?(controller: string, key: string, err: unknown, retryInMs: number): void;
}

/**
 * Runs controllers for the length of a leadership term: each term gets fresh
 * queues seeded with every key, and ends by draining them. Watches are wired
 * once; they enqueue into the current term's queue (nothing between terms).
 */
/** One leadership term's state: a stopped term is drained, never touched by the next one. */
interface Term {
  queues: Map<string, WorkQueue>;
  running: Promise<void>[];
  timers: NodeJS.Timeout[];
  started: Promise<void>;
  stopped: boolean;
}

export class Manager {
  private current: Term | undefined;

  constructor(
    private readonly controllers: ManagedController[],
    private readonly options: {
      workers: number;
      logger: Logger;
      hooks?: ManagerHooks;
      tasks?: LeaderTask[];
    },
  ) {
    for (const controller of controllers) {
      for (const watch of controller.watches) {
        watch.informer.on((event, object, old) => {
          const queue = this.current?.queues.get(controller.name);
          if (!queue) return;
          for (const key of watch.keysFor(event, object, old)) queue.add(key);
        });
      }
    }
  }

  isLeading(): boolean {
    return this.current !== undefined;
  }

  /** Keys waiting per controller (0 between terms). */
  queueDepths(): Record<string, number> {
    return Object.fromEntries(
      this.controllers.map((c) => [c.name, this.current?.queues.get(c.name)?.length ?? 0]),
    );
  }

  /** Queues every key of a controller again (e.g. once something they all need is back). */
  requeueAll(name: string): void {
    const controller = this.controllers.find((c) => c.name === name);
    const queue = this.current?.queues.get(name);
    if (controller && queue) for (const key of controller.allKeys()) queue.add(key);
  }

  startTerm(): void {
    const term: Term = {
      queues: new Map(),
      running: [],
      timers: [],
      started: Promise.resolve(),
      stopped: false,
    };
    this.current = term;
    term.started = (async () => {
      if (!(await this.prepare(term))) return;
      term.running = this.controllers.map((controller) => {
        const queue = new WorkQueue();
        term.queues.set(controller.name, queue);
        for (const key of controller.allKeys()) queue.add(key);
        return this.run(controller, queue);
      });
      term.timers = (this.options.tasks ?? []).map((task) => this.schedule(task, term));
    })();
  }

  async stopTerm(): Promise<void> {
    const term = this.current;
    if (!term) return;
    this.current = undefined;
    term.stopped = true;
    await term.started;
    for (const timer of term.timers) clearInterval(timer);
    await Promise.all([...term.queues.values()].map((queue) => queue.shutDownWithDrain()));
    await Promise.all(term.running);
  }

  private async prepare(term: Term): Promise<boolean> {
    const prepareTerm = this.options.hooks?.prepareTerm;
    while (prepareTerm && !term.stopped) {
      try {
        await prepareTerm();
        break;
      } catch (err) {
        this.options.logger.warn({ err: (err as Error).message }, 'could not prepare the term');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    return !term.stopped;
  }

  private run(controller: ManagedController, queue: WorkQueue): Promise<void> {
    const hooks = this.options.hooks;
    return runWorkers(
      queue,
      this.options.workers,
      async (key) => {
        const started = performance.now();
        let outcome: ReconcileOutcome | 'error' = 'error';
        try {
          outcome = await controller.reconcile(key);
          return queueResultOf(outcome);
        } finally {
          hooks?.reconciled?.(controller.name, outcome, (performance.now() - started) / 1000);
        }
      },
      (key, err, retryInMs) => hooks?.failed?.(controller.name, key, err, retryInMs),
    );
  }

  /** One run at a time: a slow run delays the next instead of overlapping it. */
  private schedule(task: LeaderTask, term: Term): NodeJS.Timeout {
    let busy = false;
    const timer = setInterval(() => {
      if (busy || term.stopped) return;
      busy = true;
      task
        .run()
        .catch((err: Error) =>
          this.options.logger.warn({ task: task.name, err: err.message }, 'leader task failed'),
        )
        .finally(() => {
          busy = false;
        });
    }, task.intervalMs);
    timer.unref();
    return timer;
  }
}

import { hostname } from 'node:os';
import type { Server } from 'node:http';
import { createLogger, type Logger } from '../common/logger';
import type { DataKey, MasterKey } from '../api/types';
import { LABEL_DATAKEY } from '../api/types';
import { masterKeysPath, type ControllerContext } from '../controllers/context';
import { DataKeyController } from '../controllers/datakey-controller';
import { MasterKeyController } from '../controllers/masterkey-controller';
import {
  startInjection,
  type InjectionOptions,
  type RunningInjection,
} from '../injection/injection';
import type { KmsCore } from '../kms';
import { KmsApi, listen, type Credentials, type RunningServer } from '../kms-api/server';
import { EventRecorder } from '../runtime/events';
import { Informer, keyOf } from '../runtime/informer';
import { KubeClient, isConflict, isNotFound, type KubeObject } from '../runtime/kube-client';
import { LeaderElector } from '../runtime/leader-election';
import { WorkQueue, runWorkers, type ReconcileResult } from '../runtime/workqueue';
import { OperatorMetrics, serveMetrics } from './metrics';
import { KeyStoreGuard } from './key-store-guard';

export interface OperatorOptions {
  kubeconfig?: string;
  namespace: string;
  metricsHost: string;
  metricsPort: number;
  kmsListen?: { host: string; port: number; credentials: Credentials };
  rootKeyFile?: string;
  identity?: string;
  workers?: number;
  leaseDurationSeconds?: number;
  minRotationIntervalSeconds?: number;
  /** Re-wraps per second after a rotation (default 100, 0 = unlimited). */
  rewrapsPerSecond?: number;
  /** The pod webhook and the agents' delivery endpoint; off when undefined. */
  injection?: InjectionOptions;
  logger?: Logger;
}

interface ControllerLoop {
  name: string;
  queue: WorkQueue;
  reconcile: (key: string) => Promise<ReconcileResult | void>;
}

export interface RunningOperator {
  metrics: OperatorMetrics;
  isLeader(): boolean;
  stop(): Promise<void>;
}

/**
 * Starts the operator: caches warm on every replica, reconciling only on the
 * leader. Losing the lease stops the workers at once; a clean stop releases it.
 */
export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const logger = options.logger ?? createLogger('operator');
  const client = KubeClient.fromEnvironment(options.kubeconfig);
  const namespace = options.namespace;
  await ensureNamespace(client, namespace);

  // /readyz answers from the start: while the stored state is damaged it says why.
  const metrics = new OperatorMetrics();
  let started = false;
  let stopping = false;
  const guard: KeyStoreGuard = new KeyStoreGuard({
    client,
    namespace,
    rootKeyFile: options.rootKeyFile,
    logger,
    expectedKeyIds: () => keysNamedByMasterKeys(ctx),
    onRecovered: () => {
      for (const name of keysFor(ctx, 'masterkey')) masterKeyLoop.queue.add(name);
    },
  });
  const metricsServer: Server = await serveMetrics(
    metrics,
    {
      live: () => true,
      ready: () => (stopping ? 'stopping' : (guard.problem ?? (started || 'starting'))),
    },
    options.metricsHost,
    options.metricsPort,
  );
  const core = await guard.open();

  metrics.countKubeRequests(client);
  // The controllers write only while this replica holds a fresh lease (see
  // LeaderElector.writeFence); reads, the key store and injection are not fenced.
  const ctx: ControllerContext = {
    client: client.withWriteFence(() => elector.writeFence()),
    core,
    masterKeys: new Informer<MasterKey & KubeObject>(client, { path: masterKeysPath() }, logger),
    dataKeys: new Informer<DataKey & KubeObject>(
      client,
      { path: '/apis/kms.datakey.io/v1alpha1/datakeys' },
      logger,
    ),
    secrets: new Informer(
      client,
      { path: '/api/v1/secrets', labelSelector: LABEL_DATAKEY },
      logger,
    ),
    events: new EventRecorder(client, 'datakey-operator', logger),
    metrics,
    logger,
  };
  const masterKeyController = new MasterKeyController(ctx);
  const dataKeyController = new DataKeyController(ctx, {
    rewrapsPerSecond: options.rewrapsPerSecond,
  });
  const loops: ControllerLoop[] = [
    {
      name: 'masterkey',
      queue: new WorkQueue(),
      reconcile: (k) => masterKeyController.reconcile(k),
    },
    { name: 'datakey', queue: new WorkQueue(), reconcile: (k) => dataKeyController.reconcile(k) },
  ];
  const [masterKeyLoop, dataKeyLoop] = loops;
  wireEvents(ctx, masterKeyLoop, dataKeyLoop);

  for (const informer of [ctx.masterKeys, ctx.dataKeys, ctx.secrets]) informer.start();
  await Promise.all([ctx.masterKeys.synced, ctx.dataKeys.synced, ctx.secrets.synced]);

  let running: Promise<void>[] = [];
  let leading = false;
  let term = 0;
  let starting: Promise<void> = Promise.resolve();
  const startWorkers = () => {
    const myTerm = ++term;
    leading = true;
    metrics.leader.set(1);
    starting = (async () => {
      // Another replica may have led since this core loaded the key store: the keys
      // it created exist only in the store, so re-read it before reconciling.
      for (;;) {
        if (myTerm !== term) return;
        try {
          await core.reload();
          break;
        } catch (err) {
          logger.warn({ err: (err as Error).message }, 'could not reload the key store');
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      if (myTerm !== term) return;
      running = loops.map((loop) => {
        loop.queue = new WorkQueue();
        for (const key of keysFor(ctx, loop.name)) loop.queue.add(key);
        return runLoop(loop, options.workers ?? 4, metrics, logger, core);
      });
    })();
  };
  const stopWorkers = async () => {
    term++;
    leading = false;
    metrics.leader.set(0);
    await starting;
    await Promise.all(loops.map((loop) => loop.queue.shutDownWithDrain()));
    await Promise.all(running);
    running = [];
  };

  const elector = new LeaderElector(
    client,
    {
      namespace,
      name: 'datakey-operator',
      identity: options.identity ?? `${hostname()}-${process.pid}`,
      leaseDurationSeconds: options.leaseDurationSeconds,
      onStartedLeading: startWorkers,
      onStoppedLeading: () => void stopWorkers(),
    },
    logger,
  );
  elector.start();

  const gauges = setInterval(() => {
    for (const loop of loops) metrics.queueDepth.set({ controller: loop.name }, loop.queue.length);
    const counts = { True: 0, False: 0, Unknown: 0 };
    for (const dk of ctx.dataKeys.list()) {
      const ready = dk.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
      counts[ready]++;
    }
    for (const [ready, n] of Object.entries(counts)) metrics.dataKeys.set({ ready }, n);
  }, 5000);
  gauges.unref();

  // Before /readyz answers: a Service routes admissions only to replicas that serve them.
  const injection: RunningInjection | undefined = options.injection
    ? await startInjection({ ...ctx, client }, namespace, options.injection)
    : undefined;
  let kmsServer: RunningServer | undefined;
  if (options.kmsListen) {
    const api = new KmsApi({
      core,
      credentials: options.kmsListen.credentials,
      logger,
      rateLimit: 750,
    });
    kmsServer = await listen(api, options.kmsListen);
  }
  started = true;
  logger.info({ namespace }, 'operator started');

  return {
    metrics,
    isLeader: () => leading,
    async stop() {
      stopping = true;
      clearInterval(gauges);
      guard.stop();
      await elector.stop();
      await stopWorkers();
      await injection?.stop();
      for (const informer of [ctx.masterKeys, ctx.dataKeys, ctx.secrets]) informer.stop();
      await kmsServer?.close();
      await new Promise((resolve) => metricsServer.close(resolve));
      await core.close();
      logger.info('operator stopped');
    },
  };
}

async function runLoop(
  loop: ControllerLoop,
  workers: number,
  metrics: OperatorMetrics,
  logger: Logger,
  core: KmsCore,
) {
  await runWorkers(
    loop.queue,
    workers,
    async (key) => {
      const end = metrics.reconcileSeconds.startTimer({ controller: loop.name });
      try {
        const result = await loop.reconcile(key);
        metrics.reconciles.inc({
          controller: loop.name,
          result: result?.requeueAfterMs ? 'requeue' : 'success',
        });
        return result;
      } finally {
        end();
      }
    },
    (key, err, retryInMs) => {
      metrics.reconciles.inc({ controller: loop.name, result: 'error' });
      // A conflict may come from the key store: another writer got there first.
      if (isConflict(err)) void core.reload().catch(() => undefined);
      logger.warn(
        { controller: loop.name, object: key, err: (err as Error).message, retryInMs },
        'reconcile failed',
      );
    },
  );
}

/** The keys that MasterKeys (not being deleted) have: the store must hold each. */
function* keysNamedByMasterKeys(
  ctx: ControllerContext,
): Iterable<{ keyId: string; owner: string }> {
  for (const mk of ctx.masterKeys.list()) {
    const keyId = mk.status?.keyId;
    if (keyId && !mk.metadata.deletionTimestamp) {
      yield { keyId, owner: `MasterKey ${mk.metadata.name}` };
    }
  }
}

function keysFor(ctx: ControllerContext, controller: string): string[] {
  const informer = controller === 'masterkey' ? ctx.masterKeys : ctx.dataKeys;
  return informer.list().map(keyOf);
}

/**
 * Informer handlers only enqueue keys: the object itself, and what depends on it.
 * They read each loop's current queue, which is replaced on every leadership term.
 */
function wireEvents(
  ctx: ControllerContext,
  masterKeys: ControllerLoop,
  dataKeys: ControllerLoop,
): void {
  ctx.masterKeys.on((_event, mk, old) => {
    masterKeys.queue.add(mk.metadata.name);
    if (old && !mattersToDataKeys(old, mk)) return;
    for (const dk of ctx.dataKeys.list()) {
      if (dk.spec.masterKeyRef.name === mk.metadata.name) dataKeys.queue.add(keyOf(dk));
    }
  });
  ctx.dataKeys.on((event, dk) => {
    dataKeys.queue.add(keyOf(dk));
    if (event === 'delete') masterKeys.queue.add(dk.spec.masterKeyRef.name);
  });
  ctx.secrets.on((_event, secret) => {
    // A Secret whose label was removed leaves the label-selected watch as a delete
    // of the object *without* the label: its controller reference still names the owner.
    const controller = (
      secret.metadata.ownerReferences as
        { kind?: string; name?: string; controller?: boolean; apiVersion?: string }[] | undefined
    )?.find(
      (o) => o.controller && o.kind === 'DataKey' && o.apiVersion?.startsWith('kms.datakey.io/'),
    );
    const owner = secret.metadata.labels?.[LABEL_DATAKEY] ?? controller?.name;
    if (owner) dataKeys.queue.add(`${secret.metadata.namespace}/${owner}`);
    if (controller?.name && controller.name !== owner) {
      dataKeys.queue.add(`${secret.metadata.namespace}/${controller.name}`);
    }
  });
}

/** Rotation progress updates do not concern the DataKeys; key, version, state and spec do. */
function mattersToDataKeys(old: MasterKey & KubeObject, mk: MasterKey & KubeObject): boolean {
  const ready = (m: MasterKey) => m.status?.conditions?.find((c) => c.type === 'Ready')?.status;
  return (
    old.metadata.generation !== mk.metadata.generation ||
    old.status?.keyId !== mk.status?.keyId ||
    old.status?.primaryKeyVersion !== mk.status?.primaryKeyVersion ||
    ready(old) !== ready(mk) ||
    Boolean(old.metadata.deletionTimestamp) !== Boolean(mk.metadata.deletionTimestamp)
  );
}

async function ensureNamespace(client: KubeClient, namespace: string): Promise<void> {
  try {
    await client.get(`/api/v1/namespaces/${namespace}`);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await client.create('/api/v1/namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: namespace },
    });
  }
}

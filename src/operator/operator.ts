import { hostname } from 'node:os';
import type { Server } from 'node:http';
import { dataKeysPath, masterKeysPath, secretsPath } from '../api/paths';
import { LABEL_DATAKEY, type MasterKey } from '../api/types';
import { createLogger, type Logger } from '../common/logger';
import type { ControllerContext } from '../controllers/context';
import { DataKeyController } from '../controllers/datakey-controller';
import { WorkloadController } from '../controllers/workload-controller';
import { MasterKeyController } from '../controllers/masterkey-controller';
import type { DataKeyObject, SecretObject } from '../datakey';
import type { InjectionContext } from '../injection/context';
// Type-only: the servers a flag turns on are loaded when it is given (see startOperator).
import type { InjectionOptions, RunningInjection } from '../injection/injection';
import type { KmsCore } from '../kms';
import type { Credentials, RunningServer } from '../kms-api/server';
import type { InstanceListenOptions, RunningInstanceApi } from '../kms-instance-api/server';
import { EventRecorder } from '../runtime/events';
import { Informer } from '../runtime/informer';
import { KubeClient, isConflict, isNotFound, type KubeObject } from '../runtime/kube-client';
import { LeaderElector } from '../runtime/leader-election';
import { Manager, type ManagerHooks } from '../runtime/manager';
import { keyMaintenance } from './key-maintenance';
import { OperatorMetrics, serveMetrics } from './metrics';
import { KeyStoreGuard, keysNamedByMasterKeys } from './key-store-guard';
import type { SealOptions } from './seal-options';

export interface OperatorOptions {
  kubeconfig?: string;
  namespace: string;
  metricsHost: string;
  metricsPort: number;
  kmsListen?: { host: string; port: number; credentials: Credentials };
  /** The KMS Instance API over the core's built-in instance, which holds every key. */
  kmsInstanceListen?: InstanceListenOptions;
  rootKeyFile?: string;
  identity?: string;
  workers?: number;
  leaseDurationSeconds?: number;
  /** Test-only: rotation intervals under 7 days. */
  minRotationIntervalSeconds?: number;
  /** Test-only: how long one day of a deletion window lasts (seconds). */
  deletionDaySeconds?: number;
  /** How often the leader runs key maintenance (default 10 s). */
  maintenanceIntervalMs?: number;
  /** Re-wraps per second after a rotation (default 100, 0 = unlimited). */
  rewrapsPerSecond?: number;
  /** The root key sealed by an Alibaba Cloud KMS key; the embedded default when undefined. */
  seal?: SealOptions;
  /** The pod webhook and the agents' delivery endpoint; off when undefined. */
  injection?: InjectionOptions;
  logger?: Logger;
}

export interface RunningOperator {
  metrics: OperatorMetrics;
  isLeader(): boolean;
  stop(): Promise<void>;
}

/** Reconcile workers of the leader, shared by all controllers. */
export const DEFAULT_WORKERS = 4;

/**
 * Starts the operator: caches warm on every replica, reconciling (and key
 * maintenance) only on the leader. Losing the lease stops the workers at once;
 * a clean stop releases it.
 */
export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const logger = options.logger ?? createLogger('operator');
  const client = KubeClient.fromEnvironment(options.kubeconfig);
  const namespace = options.namespace;
  await ensureNamespace(client, namespace);

  // /readyz answers from the start: while the stored state is damaged, or the
  // sealed root key cannot be opened, it says why.
  const metrics = new OperatorMetrics();
  const events = new EventRecorder(client, 'datakey-operator', logger);
  let started = false;
  let stopping = false;
  const guard: KeyStoreGuard = new KeyStoreGuard({
    client,
    namespace,
    rootKeyFile: options.rootKeyFile,
    // Loaded only with a seal: the Alibaba SDK stays out of the embedded default.
    rootKeyLocation: options.seal
      ? await (await import('./seal-options')).openSeal(client, namespace, options.seal)
      : undefined,
    recheckIntervalMs: options.seal ? (options.seal.checkIntervalMs ?? 60_000) : undefined,
    retryMs: options.seal?.retryMs,
    logger,
    events,
    expectedKeyIds: () => keysNamedByMasterKeys(ctx.masterKeys.list()),
    onRecovered: () => manager.requeueAll(masterKeyController.name),
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
  logger.info({ namespace }, 'health endpoints serving');
  const core = await guard.open({
    minRotationIntervalSeconds: options.minRotationIntervalSeconds,
    deletionDaySeconds: options.deletionDaySeconds,
    allKeysInInstance: options.kmsInstanceListen !== undefined,
  });

  metrics.countKubeRequests(client);
  const ctx: ControllerContext & InjectionContext = {
    client,
    core,
    masterKeys: new Informer<MasterKey & KubeObject>(client, { path: masterKeysPath() }, logger),
    dataKeys: new Informer<DataKeyObject>(
      client,
      { path: dataKeysPath(), strip: withoutLastApplied },
      logger,
    ),
    secrets: new Informer<SecretObject>(
      client,
      { path: secretsPath(), labelSelector: LABEL_DATAKEY },
      logger,
    ),
    events,
    metrics,
    logger,
  };
  const informers = [ctx.masterKeys, ctx.dataKeys, ctx.secrets];
  // The controllers write only while this replica holds a fresh lease (see
  // LeaderElector.writeFence); reads, the key store and injection are not fenced.
  const controllerCtx = { ...ctx, client: client.withWriteFence(() => elector.writeFence()) };
  const masterKeyController = new MasterKeyController(controllerCtx);
  const manager = new Manager(
    [
      masterKeyController,
      new DataKeyController(controllerCtx, {
        rewrapsPerSecond: options.rewrapsPerSecond,
        minRegenerationSeconds: options.minRotationIntervalSeconds,
      }),
      new WorkloadController(controllerCtx),
    ],
    {
      workers: options.workers ?? DEFAULT_WORKERS,
      logger,
      hooks: reconcileHooks(core, metrics, logger, options.seal ? guard : undefined),
      tasks: [keyMaintenance(core, ctx.masterKeys, logger, options.maintenanceIntervalMs)],
    },
  );

  for (const informer of informers) informer.start();
  await Promise.all(informers.map((informer) => informer.synced));

  const elector = new LeaderElector(
    client,
    {
      namespace,
      name: 'datakey-operator',
      identity: options.identity ?? `${hostname()}-${process.pid}`,
      leaseDurationSeconds: options.leaseDurationSeconds,
      onStartedLeading: () => {
        metrics.leader.set(1);
        manager.startTerm();
      },
      onStoppedLeading: () => {
        metrics.leader.set(0);
        void manager.stopTerm();
      },
    },
    logger,
  );
  elector.start();

  const gauges = setInterval(() => {
    for (const [controller, depth] of Object.entries(manager.queueDepths())) {
      metrics.queueDepth.set({ controller }, depth);
    }
    metrics.countDataKeys(ctx.dataKeys.list());
  }, 5000);
  gauges.unref();

  // Optional servers are imported only when configured: a replica without them
  // never loads their modules (the Instance API's protobuf, the ACS3 signer, the
  // webhook's certificate code), which is memory every replica would otherwise keep.
  // Before /readyz answers: a Service routes admissions only to replicas that serve them.
  const injectionOptions = options.injection;
  const injection: RunningInjection | undefined = injectionOptions
    ? await import('../injection/injection').then(({ startInjection }) =>
        startInjection(ctx, namespace, injectionOptions),
      )
    : undefined;
  const kmsListen = options.kmsListen;
  const kmsServer: RunningServer | undefined = kmsListen
    ? await import('../kms-api/server').then(({ KmsApi, listen }) =>
        listen(
          new KmsApi({ core, credentials: kmsListen.credentials, logger, rateLimit: 750 }),
          kmsListen,
        ),
      )
    : undefined;
  // Replicas share the key store: a client key created through another replica
  // is picked up by a reload when a request names it.
  const instanceListen = options.kmsInstanceListen;
  const instanceServer: RunningInstanceApi | undefined = instanceListen
    ? await import('../kms-instance-api/server').then(({ startInstanceApi }) =>
        startInstanceApi(core, instanceListen, logger, () => core.reload()),
      )
    : undefined;
  started = true;
  logger.info({ namespace }, 'operator started');

  return {
    metrics,
    isLeader: () => manager.isLeading(),
    async stop() {
      stopping = true;
      clearInterval(gauges);
      guard.stop();
      await elector.stop();
      metrics.leader.set(0);
      await manager.stopTerm();
      await injection?.stop();
      for (const informer of informers) informer.stop();
      await kmsServer?.close();
      await instanceServer?.close();
      await new Promise((resolve) => metricsServer.close(resolve));
      await core.close();
      logger.info('operator stopped');
    },
  };
}

/**
 * kubectl's client-side apply keeps a whole copy of the object in an annotation
 * no controller reads: the DataKey cache drops it (a DataKey applied with
 * kubectl would otherwise be held twice). Only status is ever written from a
 * cached DataKey, so nothing writes the annotation away. (Secrets keep theirs:
 * a Secret is replaced from its cached metadata.)
 */
function withoutLastApplied(object: KubeObject): void {
  delete object.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration'];
}

/** Reconciles counted and timed; a failure logged, and a conflict (perhaps in the key store) reloads it. */
function reconcileHooks(
  core: KmsCore,
  metrics: OperatorMetrics,
  logger: Logger,
  sealedRootKey: KeyStoreGuard | undefined,
): ManagerHooks {
  return {
    // Another replica may have led since this core loaded the key store: the keys
    // it created exist only in the store, so re-read it before reconciling. With a
    // seal, each term also unseals the root key again: no term runs on a seal that
    // has been revoked.
    prepareTerm: async () => {
      await sealedRootKey?.verifyRootKey();
      await core.reload();
    },
    reconciled(controller, outcome, seconds) {
      metrics.reconcileSeconds.observe({ controller }, seconds);
      if (outcome === 'error' || outcome.kind === 'retry') return; // counted by failed()
      const requeued = outcome.kind === 'wait' || outcome.requeueAfterMs !== undefined;
      metrics.reconciles.inc({ controller, result: requeued ? 'requeue' : 'success' });
    },
    failed(controller, key, err, retryInMs) {
      metrics.reconciles.inc({ controller, result: 'error' });
      if (isConflict(err)) void core.reload().catch(() => undefined);
      logger.warn(
        { controller, object: key, err: (err as Error).message, retryInMs },
        'reconcile failed',
      );
    },
  };
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

import * as http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ConditionType } from '../api/conditions';
import type { DataKey } from '../api/types';
import { findCondition } from '../runtime/conditions';
import type { KubeClient } from '../runtime/kube-client';

/** The operator's Prometheus metrics; labels never carry key material. */
export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: 'datakey_reconcile_total',
    help: 'Reconciles by controller and result (success, error, requeue).',
    labelNames: ['controller', 'result'],
    registers: [this.registry],
  });
  readonly reconcileSeconds = new Histogram({
    name: 'datakey_reconcile_duration_seconds',
    help: 'Reconcile duration by controller.',
    labelNames: ['controller'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'datakey_workqueue_depth',
    help: 'Keys waiting in the work queue by controller.',
    labelNames: ['controller'],
    registers: [this.registry],
  });
  readonly kmsCalls = new Counter({
    name: 'datakey_kms_calls_total',
    help: 'Calls into the embedded KMS core by operation and result code.',
    labelNames: ['operation', 'code'],
    registers: [this.registry],
  });
  readonly dataKeys = new Gauge({
    name: 'datakey_datakeys',
    help: 'DataKeys by Ready condition status.',
    labelNames: ['ready'],
    registers: [this.registry],
  });
  readonly rotations = new Counter({
    name: 'datakey_rotations_total',
    help: 'Master key rotations by trigger (annotation, schedule).',
    labelNames: ['trigger'],
    registers: [this.registry],
  });
  readonly rewraps = new Counter({
    name: 'datakey_rewraps_total',
    help: 'DataKeys re-wrapped under a new primary version, by result.',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly rewrapSeconds = new Histogram({
    name: 'datakey_rewrap_duration_seconds',
    help: 'Time to re-wrap one DataKey (core call, status and Secret writes).',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly admissions = new Counter({
    name: 'datakey_webhook_admissions_total',
    help: 'AdmissionReviews answered by the pod webhook, by result (patched, unchanged, refused, invalid).',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly admissionSeconds = new Histogram({
    name: 'datakey_webhook_admission_duration_seconds',
    help: 'Time to answer one AdmissionReview, body read included.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [this.registry],
  });
  readonly deliveries = new Counter({
    name: 'datakey_deliveries_total',
    help: 'Requests of in-pod agents for data keys, by result (delivered, unauthenticated, forbidden, not_ready, invalid, throttled, error).',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'datakey_leader',
    help: '1 while this replica holds the leader lease.',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'datakey_process_' });
  }

  /** Sets `datakey_datakeys` from the DataKeys' Ready conditions. */
  countDataKeys(dataKeys: DataKey[]): void {
    const counts = { True: 0, False: 0, Unknown: 0 };
    for (const dk of dataKeys) {
      counts[findCondition(dk.status?.conditions, ConditionType.Ready)?.status ?? 'Unknown']++;
    }
    for (const [ready, n] of Object.entries(counts)) this.dataKeys.set({ ready }, n);
  }

  /**
   * Exposes the client's answered requests (watch streams excluded) as
   * `datakey_kube_api_requests_total{verb,resource,code}`: what the create path
   * costs is told apart from lease renewals and the key store's reads.
   */
  countKubeRequests(client: Pick<KubeClient, 'requestTallies'>): void {
    new Counter({
      name: 'datakey_kube_api_requests_total',
      help: 'Requests answered by the Kubernetes API server, by verb, resource and status code ("error": no answer); watch streams not counted.',
      labelNames: ['verb', 'resource', 'code'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { verb, resource, code, count } of client.requestTallies()) {
          this.inc({ verb, resource, code }, count);
        }
      },
    });
  }
}

export interface HealthState {
  /** Live: the process and its event loop work. */
  live(): boolean;
  /** Ready: caches synced (leader) or standing by (follower); else why not. */
  ready(): true | string;
}

/** Serves /metrics, /healthz and /readyz on their own port. */
export function serveMetrics(
  metrics: OperatorMetrics,
  health: HealthState,
  host: string,
  port: number,
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/readyz') {
      const state = path === '/healthz' ? health.live() || 'not live' : health.ready();
      res
        .writeHead(state === true ? 200 : 503, { 'content-type': 'text/plain' })
        .end(state === true ? 'ok' : `not ready: ${state}`);
      return;
    }
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

import type { DataKey, MasterKey } from '../api/types';
import type { Logger } from '../common/logger';
import { countedKmsCall, type KmsCallCounter, type SecretObject } from '../datakey';
import type { KmsCore } from '../kms';
import type { EventRecorder } from '../runtime/events';
import type { Informer } from '../runtime/informer';
import type { KubeClient, KubeObject } from '../runtime/kube-client';

/** The metrics the controllers record (the operator's metrics provide them). */
export interface ControllerMetrics {
  kmsCalls: KmsCallCounter;
  rotations: { inc(labels: { trigger: 'annotation' | 'schedule' }): void };
  rewraps: { inc(labels: { result: 'success' | 'error' }): void };
  rewrapSeconds: { observe(seconds: number): void };
}

/** What every controller shares: API access, caches, the KMS core, events and metrics. */
export interface ControllerContext {
  client: KubeClient;
  core: KmsCore;
  masterKeys: Informer<MasterKey & KubeObject>;
  dataKeys: Informer<DataKey & KubeObject>;
  secrets: Informer<SecretObject>;
  events: EventRecorder;
  metrics: ControllerMetrics;
  logger: Logger;
}

/** Calls the core and counts the call by operation and result code. */
export const kmsCall = <T>(ctx: ControllerContext, operation: string, call: () => T): T =>
  countedKmsCall(ctx.metrics.kmsCalls, operation, call);

import type { Logger } from '../common/logger';
import type { DataKeyObject, KmsCallCounter, SecretObject } from '../datakey';
import type { KmsCore } from '../kms';
import type { EventRecorder } from '../runtime/events';
import type { Informer } from '../runtime/informer';
import type { KubeClient } from '../runtime/kube-client';

/** The metrics pod injection records (the operator's metrics provide them). */
export interface InjectionMetrics {
  kmsCalls: KmsCallCounter;
  admissions: { inc(labels: { result: string }): void };
  admissionSeconds: { startTimer(): () => unknown };
  deliveries: { inc(labels: { result: string }): void };
}

/** What the webhook and key delivery use: API access, the DataKey caches, the core. */
export interface InjectionContext {
  client: KubeClient;
  core: KmsCore;
  dataKeys: Informer<DataKeyObject>;
  secrets: Informer<SecretObject>;
  events: EventRecorder;
  metrics: InjectionMetrics;
  logger: Logger;
}

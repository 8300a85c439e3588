import type { Logger } from '../common/logger';
import type { KmsCore } from '../kms';
import { KmsError } from '../kms';
import type { OperatorMetrics } from '../operator/metrics';
import type { EventRecorder } from '../runtime/events';
import type { Informer } from '../runtime/informer';
import type { KubeClient, KubeObject } from '../runtime/kube-client';
import type { DataKey, MasterKey } from '../api/types';

export const FIELD_MANAGER = 'datakey-operator';

/** What every controller shares: API access, caches, the KMS core, events and metrics. */
export interface ControllerContext {
  client: KubeClient;
  core: KmsCore;
  masterKeys: Informer<MasterKey & KubeObject>;
  dataKeys: Informer<DataKey & KubeObject>;
  secrets: Informer<KubeObject & { data?: Record<string, string> }>;
  events: EventRecorder;
  metrics: OperatorMetrics;
  logger: Logger;
}

/** Calls the core and counts the call by operation and result code. */
export function kmsCall<T>(ctx: ControllerContext, operation: string, call: () => T): T {
  try {
    const result = call();
    if (result instanceof Promise) {
      return result.then(
        (value) => {
          ctx.metrics.kmsCalls.inc({ operation, code: 'OK' });
          return value;
        },
        (err: unknown) => {
          ctx.metrics.kmsCalls.inc({ operation, code: codeOf(err) });
          throw err;
        },
      ) as T;
    }
    ctx.metrics.kmsCalls.inc({ operation, code: 'OK' });
    return result;
  } catch (err) {
    ctx.metrics.kmsCalls.inc({ operation, code: codeOf(err) });
    throw err;
  }
}

const codeOf = (err: unknown) => (err instanceof KmsError ? err.code : 'Error');

export const dataKeysPath = (namespace: string) =>
  `/apis/kms.datakey.io/v1alpha1/namespaces/${namespace}/datakeys`;
export const masterKeysPath = () => '/apis/kms.datakey.io/v1alpha1/masterkeys';
export const secretsPath = (namespace: string) => `/api/v1/namespaces/${namespace}/secrets`;

/** Status patches carry the resourceVersion the decision was made on: a stale cache gets 409. */
export function statusPatch(object: KubeObject, status: unknown) {
  return { metadata: { resourceVersion: object.metadata.resourceVersion }, status };
}

import type { Logger } from '../common/logger';
import type { KubeClient, KubeObject } from './kube-client';

export type EventType = 'Normal' | 'Warning';

/**
 * Records core/v1 Events with stable reasons. Identical events within a short
 * window are counted on the existing Event instead of creating new ones. Event
 * messages are written by our code only and never carry key material.
 */
export class EventRecorder {
  private readonly recent = new Map<
    string,
    { name: string; namespace: string; count: number; at: number }
  >();

  constructor(
    private readonly client: KubeClient,
    private readonly component: string,
    private readonly logger: Logger,
    private readonly dedupeWindowMs = 5 * 60_000,
  ) {}

  record(object: KubeObject, type: EventType, reason: string, message: string): void {
    void this.send(object, type, reason, message).catch((err: Error) =>
      this.logger.warn({ reason, err: err.message }, 'could not record event'),
    );
  }

  private async send(
    object: KubeObject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<void> {
    const namespace = object.metadata.namespace ?? 'default';
    const key = [object.metadata.uid, type, reason, message].join('\u0000');
    const now = new Date().toISOString();
    const seen = this.recent.get(key);
    if (seen && Date.now() - seen.at < this.dedupeWindowMs) {
      seen.count++;
      seen.at = Date.now();
      await this.client.mergePatch(`/api/v1/namespaces/${seen.namespace}/events/${seen.name}`, {
        count: seen.count,
        lastTimestamp: now,
      });
      return;
    }
    const name = `${object.metadata.name}.${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`;
    await this.client.create(`/api/v1/namespaces/${namespace}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: object.apiVersion,
        kind: object.kind,
        name: object.metadata.name,
        namespace: object.metadata.namespace,
        uid: object.metadata.uid,
        resourceVersion: object.metadata.resourceVersion,
      },
      type,
      reason,
      message,
      source: { component: this.component },
      reportingComponent: this.component,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
    this.recent.set(key, { name, namespace, count: 1, at: Date.now() });
    if (this.recent.size > 10_000) this.recent.delete(this.recent.keys().next().value as string);
  }
}

import type { ReconcileResult } from './workqueue';

/**
 * How a reconcile ended, shared by every controller:
 * - `ready`: the object matches its spec; looked at again after `requeueAfterMs` if set.
 * - `wait`: blocked on something outside the object (another object, a foreign
 *   Secret); tried again after `delayMs` and whenever a watch maps a change to it.
 * - `retry`: a failure that may pass (a KMS error, a conflict); retried with the
 *   queue's per-key exponential backoff.
 * `wait` and `retry` carry the condition reason and message the controller reports.
 */
export type ReconcileOutcome =
  | { kind: 'ready'; requeueAfterMs?: number }
  | { kind: 'wait'; reason: string; message: string; delayMs: number }
  | { kind: 'retry'; reason: string; message: string };

export type NotReadyOutcome = Exclude<ReconcileOutcome, { kind: 'ready' }>;

export const ready = (requeueAfterMs?: number): ReconcileOutcome => ({
  kind: 'ready',
  requeueAfterMs,
});

/** Thrown from deep inside a reconcile to end it with a `wait` or `retry` outcome. */
export class NotReady extends Error {
  constructor(readonly outcome: NotReadyOutcome) {
    super(outcome.message);
  }

  static wait(reason: string, message: string, delayMs: number): NotReady {
    return new NotReady({ kind: 'wait', reason, message, delayMs });
  }

  static retry(reason: string, message: string): NotReady {
    return new NotReady({ kind: 'retry', reason, message });
  }
}

/** The failure the work queue sees for a `retry` outcome, so it backs off. */
export class RetryLater extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(`${reason}: ${message}`);
  }
}

/** What the work queue does with an outcome: requeue after a delay, or back off (thrown). */
export function queueResultOf(outcome: ReconcileOutcome): ReconcileResult | void {
  switch (outcome.kind) {
    case 'ready':
      return outcome.requeueAfterMs === undefined
        ? undefined
        : { requeueAfterMs: outcome.requeueAfterMs };
    case 'wait':
      return { requeueAfterMs: outcome.delayMs };
    case 'retry':
      throw new RetryLater(outcome.reason, outcome.message);
  }
}

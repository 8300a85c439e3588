import { throttled } from './errors';

/** Beyond this many buckets, full ones are forgotten (they hold no state). */
const MAX_BUCKETS = 10_000;

/**
 * Token buckets per account and operation: `ratePerSecond` calls a second with a
 * burst of one second's worth. A rate of 0 means unlimited.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; updatedMs: number }>();
  private sweptMs = -Infinity;

  constructor(
    private readonly ratePerSecond: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    if (!Number.isInteger(ratePerSecond) || ratePerSecond < 0) {
      throw new Error('rate limit must be a whole number of calls per second, 0 for unlimited');
    }
  }

  /** Takes one token or throws Rejected.Throttling. */
  take(account: string, operation: string): void {
    if (!this.tryTake(account, operation)) throw throttled();
  }

  /** Takes one token if there is one. */
  tryTake(account: string, operation: string): boolean {
    return this.acquire(account, operation) === 0;
  }

  /** Takes one token and returns 0, or returns the milliseconds until one is available. */
  acquire(account: string, operation: string): number {
    if (this.ratePerSecond === 0) return 0;
    const name = `${account}\u0000${operation}`;
    const now = this.nowMs();
    // A sweep at most once a second: a bucket untouched for a second is full again.
    if (this.buckets.size >= MAX_BUCKETS && now - this.sweptMs >= 1000) {
      this.sweptMs = now;
      this.dropFull(now);
    }
    const bucket = this.buckets.get(name) ?? { tokens: this.ratePerSecond, updatedMs: now };
    bucket.tokens = this.refilled(bucket, now);
    bucket.updatedMs = now;
    this.buckets.set(name, bucket);
    if (bucket.tokens < 1) return Math.ceil(((1 - bucket.tokens) / this.ratePerSecond) * 1000);
    bucket.tokens -= 1;
    return 0;
  }

  private refilled(bucket: { tokens: number; updatedMs: number }, now: number): number {
    return Math.min(
      this.ratePerSecond,
      bucket.tokens + ((now - bucket.updatedMs) / 1000) * this.ratePerSecond,
    );
  }

  /** Many callers (e.g. one bucket per pod): a full bucket is the same as none. */
  private dropFull(now: number): void {
    for (const [name, bucket] of this.buckets) {
      if (this.refilled(bucket, now) >= this.ratePerSecond) this.buckets.delete(name);
    }
  }
}

import { throttled } from './errors';

/**
 * Token buckets per account and operation: `ratePerSecond` calls a second with a
 * burst of one second's worth. A rate of 0 means unlimited.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; updatedMs: number }>();

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
    if (this.ratePerSecond === 0) return true;
    const name = `${account}\u0000${operation}`;
    const now = this.nowMs();
    const bucket = this.buckets.get(name) ?? { tokens: this.ratePerSecond, updatedMs: now };
    bucket.tokens = Math.min(
      this.ratePerSecond,
      bucket.tokens + ((now - bucket.updatedMs) / 1000) * this.ratePerSecond,
    );
    bucket.updatedMs = now;
    this.buckets.set(name, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

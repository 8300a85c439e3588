import { throttled } from '../kms/errors';

/**
 * Remembers signature nonces for `retentionMs`, in one-minute buckets so that
 * expiry costs nothing per request. Bounded: past `maxEntries` new requests are
 * throttled rather than letting old nonces be forgotten early (which would allow replays).
 */
export class NonceCache {
  private readonly seen = new Set<string>();
  private readonly buckets = new Map<number, string[]>();

  constructor(
    private readonly retentionMs: number,
    private readonly maxEntries = 4_000_000,
  ) {}

  /** Records the nonce; false when it was already seen. */
  add(nonce: string, nowMs: number): boolean {
    this.expire(nowMs);
    if (this.seen.has(nonce)) return false;
    if (this.seen.size >= this.maxEntries) {
      throw throttled();
    }
    this.seen.add(nonce);
    const minute = Math.floor(nowMs / 60_000);
    const bucket = this.buckets.get(minute);
    if (bucket) bucket.push(nonce);
    else this.buckets.set(minute, [nonce]);
    return true;
  }

  private expire(nowMs: number): void {
    const oldest = Math.floor((nowMs - this.retentionMs) / 60_000);
    for (const [minute, nonces] of this.buckets) {
      if (minute >= oldest) break;
      for (const n of nonces) this.seen.delete(n);
      this.buckets.delete(minute);
    }
  }
}

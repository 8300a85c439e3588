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
    const kept = unshared(nonce);
    this.seen.add(kept);
    const minute = Math.floor(nowMs / 60_000);
    const bucket = this.buckets.get(minute);
    if (bucket) bucket.push(kept);
    else this.buckets.set(minute, [kept]);
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

/**
 * An exact copy of `value` in fresh memory. A nonce parsed out of a request is a
 * slice of the request's text, and a key built from it points at that slice, so
 * keeping it as is kept the whole query string alive for the retention time: about
 * 420 bytes a nonce instead of about 95 (a full cache would hold 1.7 GB, not 0.4 GB),
 * and that much more for the garbage collector to copy out of the young generation.
 * The JSON round trip is exact for every string, lone surrogates included.
 */
function unshared(value: string): string {
  return JSON.parse(JSON.stringify(value)) as string;
}

import { createHash } from 'node:crypto';
import { throttled } from '../kms/errors';

/**
 * Remembers signature nonces for replay protection. A replayed request carries
 * the same signed Timestamp, and a request is accepted only within `windowMs` of
 * its Timestamp, so a nonce needs remembering only until Timestamp + window.
 *
 * Nonces are kept as 52-bit hashes (numbers, ~20 bytes each, nothing of the
 * request kept alive) in one Set per expiry minute, so expiry drops whole Sets.
 * A hash collision can only refuse a fresh request (about one in 10^8 at ten
 * million live nonces), never accept a replay. Bounded: past `maxEntries` new
 * requests are throttled rather than letting live nonces be forgotten early.
 */
export class NonceCache {
  private readonly buckets = new Map<number, Set<number>>();
  private size = 0;
  private lastExpiredMinute = -Infinity;

  constructor(
    private readonly windowMs: number,
    private readonly maxEntries = 30_000_000,
  ) {}

  /** Records the nonce of a request signed at `requestMs`; false when already seen. */
  add(nonce: string, nowMs: number, requestMs: number = nowMs): boolean {
    this.expire(nowMs);
    const hash = hash52(nonce);
    for (const bucket of this.buckets.values()) if (bucket.has(hash)) return false;
    if (this.size >= this.maxEntries) throw throttled();
    // The minute after the last instant the same request would still be accepted.
    const expiryMinute = Math.floor((requestMs + this.windowMs) / 60_000) + 1;
    let bucket = this.buckets.get(expiryMinute);
    if (!bucket) this.buckets.set(expiryMinute, (bucket = new Set()));
    bucket.add(hash);
    this.size++;
    return true;
  }

  get entries(): number {
    return this.size;
  }

  private expire(nowMs: number): void {
    const minute = Math.floor(nowMs / 60_000);
    if (minute === this.lastExpiredMinute) return;
    this.lastExpiredMinute = minute;
    for (const [expiry, bucket] of this.buckets) {
      if (expiry > minute) continue;
      this.size -= bucket.size;
      this.buckets.delete(expiry);
    }
  }
}

function hash52(value: string): number {
  const digest = createHash('sha256').update(value, 'utf8').digest();
  return digest.readUIntBE(0, 6) * 16 + (digest[6] >> 4);
}

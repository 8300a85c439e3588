/** Seeded randomness for the fuzz tests: a failure prints its seed and replays. */

/** mulberry32: small, fast, good enough for fuzzing. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    bool: (p = 0.5) => next() < p,
    pick: <T>(items: readonly T[]): T => items[int(items.length)],
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => int(256))),
  };
}
export type Rng = ReturnType<typeof prng>;

/**
 * The seed of a fuzz run: fixed by default so CI is reproducible; KMS_FUZZ_SEED=random
 * explores new inputs, KMS_FUZZ_SEED=<seed printed in a failure> replays one.
 */
export function fuzzSeed(fixed: number): number {
  const setting = process.env.KMS_FUZZ_SEED ?? String(fixed);
  return setting === 'random' ? Math.floor(Math.random() * 2 ** 31) : Number(setting);
}

import { randomBytes } from 'node:crypto';
import { KmsCore, ManualClock, MemoryKeyStore, RootKey, type KeyStore } from '../../src/kms';

export async function openCore(
  options: { store?: KeyStore; clock?: ManualClock; minRotationIntervalSeconds?: number } = {},
) {
  const clock = options.clock ?? new ManualClock(new Date('2026-03-01T00:00:00Z'));
  const store = options.store ?? new MemoryKeyStore();
  const core = await KmsCore.open({
    store,
    rootKey: new RootKey(randomBytes(32)),
    clock,
    minRotationIntervalSeconds: options.minRotationIntervalSeconds,
  });
  return { core, clock, store };
}

/** Runs `fn` and returns the KMS error code it threw (or fails the test). */
export async function codeOf(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (err) {
    return (err as { code?: string }).code ?? `non-KMS error: ${(err as Error).message}`;
  }
  throw new Error('expected an error, but the call succeeded');
}

export async function messageOf(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error, but the call succeeded');
}

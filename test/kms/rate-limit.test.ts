import { RateLimiter } from '../../src/kms';
import { NonceCache } from '../../src/kms-api/nonce-cache';

test('token bucket: a second of burst, then the refill rate, per account and operation', () => {
  let now = 0;
  const limiter = new RateLimiter(3, () => now);
  for (let i = 0; i < 3; i++) limiter.take('acct', 'Decrypt');
  expect(() => limiter.take('acct', 'Decrypt')).toThrow(
    expect.objectContaining({ code: 'Rejected.Throttling', httpStatus: 429 }),
  );
  limiter.take('acct', 'Encrypt');
  limiter.take('other', 'Decrypt');
  now += 340;
  limiter.take('acct', 'Decrypt');
  expect(() => limiter.take('acct', 'Decrypt')).toThrow(/throttling/);
  now += 10_000;
  for (let i = 0; i < 3; i++) limiter.take('acct', 'Decrypt');
  expect(() => limiter.take('acct', 'Decrypt')).toThrow(/throttling/);
});

test('rate 0 is unlimited; a negative or fractional rate is refused', () => {
  const limiter = new RateLimiter(0);
  for (let i = 0; i < 10_000; i++) limiter.take('a', 'b');
  expect(() => new RateLimiter(-1)).toThrow();
  expect(() => new RateLimiter(1.5)).toThrow();
});

test('nonces are refused within the retention and forgotten after it', () => {
  const cache = new NonceCache(30 * 60_000);
  const t0 = 1_000_000_000_000;
  expect(cache.add('n1', t0)).toBe(true);
  expect(cache.add('n1', t0 + 29 * 60_000)).toBe(false);
  expect(cache.add('n1', t0 + 32 * 60_000)).toBe(true);
});

test('a full nonce cache throttles instead of forgetting early', () => {
  const cache = new NonceCache(60_000, 2);
  cache.add('a', 0);
  cache.add('b', 0);
  expect(() => cache.add('c', 0)).toThrow(expect.objectContaining({ code: 'Rejected.Throttling' }));
  expect(cache.add('a', 1000)).toBe(false);
});

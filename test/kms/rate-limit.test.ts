import { RateLimiter } from '../../src/kms';

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

test('acquire says how long until the next token; many full buckets are forgotten', () => {
  let now = 0;
  const limiter = new RateLimiter(2, () => now);
  expect(limiter.acquire('pod-a', 'deliver')).toBe(0);
  expect(limiter.acquire('pod-a', 'deliver')).toBe(0);
  expect(limiter.acquire('pod-a', 'deliver')).toBe(500);
  now += 200;
  expect(limiter.acquire('pod-a', 'deliver')).toBe(300);
  now += 300;
  expect(limiter.acquire('pod-a', 'deliver')).toBe(0);
  for (let i = 0; i < 20_000; i++) expect(limiter.acquire(`pod-${i}`, 'deliver')).toBe(0);
  now += 1000;
  // The buckets of 10,000 pods were full again and dropped: a new pod still gets its burst.
  expect(limiter.acquire('pod-new', 'deliver')).toBe(0);
  const size = (limiter as unknown as { buckets: Map<string, unknown> }).buckets.size;
  expect(size).toBeLessThanOrEqual(10_001);
});

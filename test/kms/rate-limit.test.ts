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

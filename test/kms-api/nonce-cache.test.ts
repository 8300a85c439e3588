import { NonceCache } from '../../src/kms-api/nonce-cache';

test('a nonce is accepted once, also when it arrives as a slice of a longer string', () => {
  const cache = new NonceCache(60_000);
  const now = Date.now();
  const query = 'Action=X&SignatureNonce=0123456789abcdef&Timestamp=now';
  const sliced = query.slice(query.indexOf('=', 9) + 1, query.indexOf('&', 9));
  expect(cache.add(`id\u0000${sliced}`, now)).toBe(true);
  expect(cache.add('id\u00000123456789abcdef', now)).toBe(false);
  expect(cache.add(`id\u0000${sliced}`, now + 1000)).toBe(false);
  expect(cache.add('id\u0000other', now)).toBe(true);
});

test('nonces are forgotten only after the retention time', () => {
  const cache = new NonceCache(120_000);
  const start = 1_700_000_000_000;
  expect(cache.add('n', start)).toBe(true);
  expect(cache.add('n', start + 60_000)).toBe(false);
  expect(cache.add('n', start + 240_000)).toBe(true);
});

test('a full nonce cache throttles instead of forgetting early', () => {
  const cache = new NonceCache(60_000, 2);
  cache.add('a', 0);
  cache.add('b', 0);
  expect(() => cache.add('c', 0)).toThrow(expect.objectContaining({ code: 'Rejected.Throttling' }));
  expect(cache.add('a', 1000)).toBe(false);
});

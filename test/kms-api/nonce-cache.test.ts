import { NonceCache } from '../../src/kms-api/nonce-cache';

const WINDOW = 15 * 60_000;
const start = 1_700_000_000_000;

test('a nonce is accepted once, however the string was built', () => {
  const cache = new NonceCache(WINDOW);
  const query = 'Action=X&SignatureNonce=0123456789abcdef&Timestamp=now';
  const sliced = query.slice(query.indexOf('=', 9) + 1, query.indexOf('&', 9));
  expect(cache.add(`id\u0000${sliced}`, start)).toBe(true);
  expect(cache.add('id\u00000123456789abcdef', start)).toBe(false);
  expect(cache.add(`id\u0000${sliced}`, start + 1000)).toBe(false);
  expect(cache.add('id\u0000other', start)).toBe(true);
  expect(cache.entries).toBe(2);
});

test('a nonce is remembered for as long as its request could still be accepted', () => {
  const cache = new NonceCache(WINDOW);
  // Signed now: replayable until now + 15 min.
  expect(cache.add('n', start, start)).toBe(true);
  expect(cache.add('n', start + WINDOW, start)).toBe(false);
  expect(cache.add('n', start + WINDOW + 2 * 60_000, start)).toBe(true);
  // Signed 15 minutes in the future (the edge of the window): remembered 30 minutes.
  expect(cache.add('future', start, start + WINDOW)).toBe(true);
  expect(cache.add('future', start + 2 * WINDOW, start + WINDOW)).toBe(false);
  // Signed 15 minutes ago: already at the edge, forgotten soon after.
  expect(cache.add('past', start, start - WINDOW)).toBe(true);
  expect(cache.add('past', start + 2 * 60_000, start - WINDOW)).toBe(true);
});

test('expired minutes are dropped whole', () => {
  const cache = new NonceCache(WINDOW);
  for (let i = 0; i < 1000; i++) cache.add(`n${i}`, start);
  expect(cache.entries).toBe(1000);
  cache.add('later', start + WINDOW + 2 * 60_000);
  expect(cache.entries).toBe(1);
});

test('a full nonce cache throttles instead of forgetting early', () => {
  const cache = new NonceCache(WINDOW, 2);
  cache.add('a', start);
  cache.add('b', start);
  expect(() => cache.add('c', start)).toThrow(
    expect.objectContaining({ code: 'Rejected.Throttling' }),
  );
  expect(cache.add('a', start + 1000)).toBe(false);
});

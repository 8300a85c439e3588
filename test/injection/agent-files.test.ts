import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { retryAfterMs, syncKeyFiles, type KeyGenerations } from '../../src/injection/agent';

let dir: string;
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-files-'))));
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const key = (current: number, numbers: number[]): Map<string, KeyGenerations> =>
  new Map([
    [
      'orders',
      {
        generation: current,
        generations: new Map(numbers.map((n) => [n, Buffer.from(`key-${n}`)])),
      },
    ],
  ]);
const read = (...parts: string[]) => fs.readFileSync(path.join(dir, ...parts), 'utf8');
const listing = () => fs.readdirSync(path.join(dir, 'orders.generations')).sort();

test('writes <name>, <name>.generation and every <name>.generations/<n>, mode 0400', () => {
  expect(syncKeyFiles(dir, key(2, [1, 2]))).toBe(true);
  expect(read('orders')).toBe('key-2');
  expect(read('orders.generation')).toBe('2');
  expect(listing()).toEqual(['1', '2']);
  expect(read('orders.generations', '1')).toBe('key-1');
  expect(fs.statSync(path.join(dir, 'orders')).mode & 0o777).toBe(0o400);
  expect(fs.statSync(path.join(dir, 'orders.generations', '2')).mode & 0o777).toBe(0o400);
  expect(fs.readdirSync(dir).sort()).toEqual(['orders', 'orders.generation', 'orders.generations']);
});

test('a refresh adds the new generation, moves the current one, drops what was dropped; nothing else changes', () => {
  syncKeyFiles(dir, key(2, [1, 2]));
  const inode = fs.statSync(path.join(dir, 'orders.generations', '2')).ino;
  expect(syncKeyFiles(dir, key(2, [1, 2]))).toBe(false);
  expect(syncKeyFiles(dir, key(3, [2, 3]))).toBe(true);
  expect(read('orders')).toBe('key-3');
  expect(read('orders.generation')).toBe('3');
  expect(listing()).toEqual(['2', '3']);
  expect(fs.statSync(path.join(dir, 'orders.generations', '2')).ino).toBe(inode);
});

test('Retry-After in seconds or as a date', () => {
  expect(retryAfterMs('7')).toBe(7000);
  expect(retryAfterMs(new Date(10_000).toUTCString(), 4000)).toBe(6000);
  expect(retryAfterMs(undefined)).toBeUndefined();
  expect(retryAfterMs('soon')).toBeUndefined();
});

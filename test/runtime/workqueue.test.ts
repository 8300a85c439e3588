import { WorkQueue, runWorkers } from '../../src/runtime/workqueue';

const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('a key waits in the queue at most once', async () => {
  const queue = new WorkQueue();
  queue.add('a');
  queue.add('b');
  queue.add('a');
  expect(queue.length).toBe(2);
  expect(await queue.get()).toBe('a');
  expect(await queue.get()).toBe('b');
});

test('a key re-added while processing runs again after done, never concurrently', async () => {
  const queue = new WorkQueue();
  queue.add('a');
  const first = await queue.get();
  queue.add('a');
  queue.add('a');
  expect(queue.length).toBe(0); // held back while 'a' is processing
  let second: string | undefined;
  void queue.get().then((k) => (second = k));
  await tick();
  expect(second).toBeUndefined();
  queue.done(first as string);
  await tick();
  expect(second).toBe('a');
  queue.done('a');
  expect(queue.length).toBe(0);
});

test('one worker per key at a time, with bounded global concurrency', async () => {
  const queue = new WorkQueue();
  const running = new Set<string>();
  let peak = 0;
  let overlapSameKey = false;
  const runs: string[] = [];
  const workers = runWorkers(
    queue,
    3,
    async (key) => {
      if (running.has(key)) overlapSameKey = true;
      running.add(key);
      peak = Math.max(peak, running.size);
      runs.push(key);
      await sleep(5);
      running.delete(key);
    },
    () => undefined,
  );
  for (let round = 0; round < 5; round++) {
    for (const key of ['a', 'b', 'c', 'd', 'e']) queue.add(key);
    await sleep(2);
  }
  await sleep(80);
  await queue.shutDownWithDrain();
  await workers;
  expect(overlapSameKey).toBe(false);
  expect(peak).toBeLessThanOrEqual(3);
  for (const key of ['a', 'b', 'c', 'd', 'e'])
    expect(runs.filter((k) => k === key).length).toBeGreaterThanOrEqual(2);
});

test('failures back off exponentially per key and forget resets them', () => {
  const queue = new WorkQueue({ baseMs: 100, maxMs: 1000 });
  const delays = [0, 1, 2, 3, 4, 5].map(() => queue.addRateLimited('k'));
  expect(delays[0]).toBeGreaterThanOrEqual(80);
  expect(delays[0]).toBeLessThanOrEqual(120);
  expect(delays[2]).toBeGreaterThanOrEqual(320);
  expect(delays[5]).toBeLessThanOrEqual(1200);
  expect(queue.numRequeues('k')).toBe(6);
  expect(queue.numRequeues('other')).toBe(0);
  queue.forget('k');
  expect(queue.numRequeues('k')).toBe(0);
  void queue.shutDownWithDrain();
});

test('addAfter delays a key and the earliest schedule wins', async () => {
  const queue = new WorkQueue();
  queue.addAfter('a', 200);
  queue.addAfter('a', 20);
  queue.addAfter('a', 500);
  expect(queue.length).toBe(0);
  await sleep(60);
  expect(queue.length).toBe(1);
  await sleep(250);
  expect(queue.length).toBe(1);
  await queue.shutDownWithDrain();
});

test('a failing reconcile is retried with backoff; requeueAfter schedules the next run', async () => {
  const queue = new WorkQueue({ baseMs: 10, maxMs: 50 });
  const attempts: number[] = [];
  const errors: string[] = [];
  const workers = runWorkers(
    queue,
    1,
    async (key) => {
      attempts.push(Date.now());
      if (attempts.length < 3) throw new Error(`boom ${key}`);
      if (attempts.length === 3) return { requeueAfterMs: 30 };
    },
    (key, err) => errors.push(`${key}: ${(err as Error).message}`),
  );
  queue.add('x');
  await sleep(200);
  await queue.shutDownWithDrain();
  await workers;
  expect(errors).toEqual(['x: boom x', 'x: boom x']);
  expect(attempts).toHaveLength(4);
  expect(attempts[3] - attempts[2]).toBeGreaterThanOrEqual(25);
});

test('shutdown drains in-flight work and hands out nothing more', async () => {
  const queue = new WorkQueue();
  let finished = false;
  const workers = runWorkers(
    queue,
    1,
    async () => {
      await sleep(50);
      finished = true;
    },
    () => undefined,
  );
  queue.add('slow');
  queue.add('never');
  await tick();
  await queue.shutDownWithDrain();
  expect(finished).toBe(true);
  await workers;
  queue.add('late');
  expect(queue.length).toBe(0);
  expect(await queue.get()).toBeUndefined();
});

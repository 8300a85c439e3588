import { createLogger } from '../../src/common/logger';
import { eventually } from '../../src/common/wait';
import { Informer } from '../../src/runtime/informer';
import type { KubeClient, KubeObject } from '../../src/runtime/kube-client';

/**
 * The informer against a scripted client that behaves as @kubernetes/client-node
 * does: aborting a watch ends it at once with an AbortError (a normal end).
 */

interface WatchCall {
  resourceVersion: string;
}

function scriptedClient(
  firstWatch: (
    onEvent: (type: string, object: unknown) => void,
    done: (err?: unknown) => void,
  ) => void,
) {
  let lists = 0;
  const watches: WatchCall[] = [];
  const client = {
    async listPaged() {
      lists++;
      return { items: [], metadata: { resourceVersion: String(100 * lists) } };
    },
    async watch(
      _path: string,
      query: { resourceVersion: string },
      onEvent: (type: string, object: unknown) => void,
      done: (err?: unknown) => void,
    ) {
      const controller = new AbortController();
      controller.signal.addEventListener('abort', () =>
        done(Object.assign(new Error('The operation was aborted.'), { name: 'AbortError' })),
      );
      watches.push({ resourceVersion: query.resourceVersion });
      if (watches.length === 1) setImmediate(() => firstWatch(onEvent, done));
      return controller;
    },
  };
  return { client: client as unknown as KubeClient, watches, lists: () => lists };
}

/** Waits (on the informer's timers, however slow the machine) until the second watch started. */
function secondWatch(watches: WatchCall[]): Promise<true> {
  return eventually(
    'a second watch',
    10_000,
    async () => (watches.length >= 2 ? true : undefined),
    5,
  );
}

test('an ERROR 410 event re-lists at once and watches from the new list, not again from the expired resourceVersion', async () => {
  const { client, watches, lists } = scriptedClient((onEvent) =>
    onEvent('ERROR', { kind: 'Status', code: 410, reason: 'Expired', message: 'too old' }),
  );
  const lines: string[] = [];
  const logger = createLogger('informer-test', { level: 'info' });
  jest.spyOn(logger, 'warn').mockImplementation(((_o: unknown, msg: string) => {
    lines.push(msg);
  }) as never);
  jest.spyOn(logger, 'info').mockImplementation(((_o: unknown, msg: string) => {
    lines.push(msg);
  }) as never);
  const informer = new Informer<KubeObject>(client, { path: '/api/v1/secrets' }, logger);
  informer.start();
  await informer.synced;
  await secondWatch(watches);
  informer.stop();

  expect(lines).toEqual(['watch expired (410), re-listing', 'informer re-listed']);
  expect(lists()).toBe(2);
  expect(watches.map((w) => w.resourceVersion)).toEqual(['100', '200']);
});

test('a watch that ends normally resumes from the last resourceVersion it saw, without a list', async () => {
  const { client, watches, lists } = scriptedClient((onEvent, done) => {
    onEvent('ADDED', { metadata: { name: 'a', namespace: 'n', resourceVersion: '150' } });
    done(); // the server ended the watch (its timeout)
  });
  const informer = new Informer<KubeObject>(
    client,
    { path: '/api/v1/secrets' },
    createLogger('informer-test', { level: 'silent' }),
  );
  informer.start();
  await informer.synced;
  await secondWatch(watches);
  informer.stop();
  expect(informer.get('n/a')?.metadata.resourceVersion).toBe('150');
  expect(watches.map((w) => w.resourceVersion)).toEqual(['100', '150']);
  expect(lists()).toBe(1);
});

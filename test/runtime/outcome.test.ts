import { NotReady, queueResultOf, ready, RetryLater } from '../../src/runtime/outcome';

test('ready requeues only when asked; wait requeues after its delay', () => {
  expect(queueResultOf(ready())).toBeUndefined();
  expect(queueResultOf(ready(500))).toEqual({ requeueAfterMs: 500 });
  expect(queueResultOf(NotReady.wait('MasterKeyNotFound', 'm', 30_000).outcome)).toEqual({
    requeueAfterMs: 30_000,
  });
});

test('retry fails the reconcile, so the queue backs off, naming the reason', () => {
  expect(() => queueResultOf(NotReady.retry('KMSError', 'Rejected.Throttling').outcome)).toThrow(
    new RetryLater('KMSError', 'Rejected.Throttling'),
  );
  expect(() => queueResultOf(NotReady.retry('AliasConflict', 'x').outcome)).toThrow(
    'AliasConflict: x',
  );
});

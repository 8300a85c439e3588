import type * as https from 'node:https';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/common/logger';
import { KmsCore, RootKey, loadOrCreateRootKey } from '../../src/kms';
import { SecretKeyStore, rootKeySecret } from '../../src/operator/secret-key-store';
import { Informer, type InformerEvent } from '../../src/runtime/informer';
import { KubeApiError, KubeClient, type KubeObject } from '../../src/runtime/kube-client';
import { LeaderElector } from '../../src/runtime/leader-election';
import { eventually, sleep } from '../helpers/wait';

const client = KubeClient.fromEnvironment();
const logs: string[] = [];
const logger = createLogger('test', {
  destination: new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  }),
});
const ns = `runtime-${Date.now().toString(36)}`;
const configMaps = `/api/v1/namespaces/${ns}/configmaps`;

beforeAll(async () => {
  await client.create('/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: ns },
  });
});
afterAll(async () => {
  await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
});

const configMap = (name: string, value: string) => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name, namespace: ns },
  data: { value },
});

describe('KubeClient', () => {
  test('errors carry the API status and reason', async () => {
    const err = await client.get(`${configMaps}/missing`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(err).toMatchObject({ status: 404, reason: 'NotFound' });
  });

  test('server-side apply creates and then updates as its field manager', async () => {
    await client.apply(`${configMaps}/applied`, configMap('applied', 'one'), 'datakey-test');
    const updated = await client.apply<KubeObject & { data: Record<string, string> }>(
      `${configMaps}/applied`,
      configMap('applied', 'two'),
      'datakey-test',
    );
    expect(updated.data.value).toBe('two');
  });

  test('listPaged reads a collection in pages: every item once, and a resourceVersion', async () => {
    const names = Array.from({ length: 7 }, (_, i) => `paged-${i}`);
    for (const n of names) await client.create(configMaps, configMap(n, n));
    let pages = 0;
    const counting = KubeClient.fromEnvironment();
    const list = counting.list.bind(counting);
    counting.list = (path, query) => {
      pages++;
      return list(path, query);
    };
    const paged = await counting.listPaged<KubeObject>(configMaps, { labelSelector: '' }, 3);
    const got = paged.items.map((i) => i.metadata.name).filter((n) => n.startsWith('paged-'));
    expect(got.sort()).toEqual(names);
    expect(paged.items.length).toBe(new Set(paged.items.map((i) => i.metadata.name)).size);
    expect(pages).toBe(Math.ceil(paged.items.length / 3));
    expect(Number(paged.metadata.resourceVersion)).toBeGreaterThan(0);
  });

  test('keeps one TLS connection alive across sequential requests', async () => {
    const fresh = KubeClient.fromEnvironment();
    const agent = (fresh as unknown as { agent: https.Agent }).agent;
    let connections = 0;
    const createConnection = agent.createConnection.bind(agent);
    agent.createConnection = ((...args: Parameters<typeof createConnection>) => {
      connections++;
      return createConnection(...args);
    }) as typeof agent.createConnection;
    for (let i = 0; i < 5; i++) await fresh.get(`/api/v1/namespaces/${ns}`);
    expect(fresh.requestCount).toBe(5);
    expect(connections).toBe(1);
    agent.destroy();
  });
});

describe('Informer', () => {
  test('lists, then sees adds, updates and deletes; resumes after its watch is cut', async () => {
    await client.create(configMaps, configMap('before', 'x'));
    const informer = new Informer<KubeObject>(
      client,
      { path: configMaps, watchdogMs: 60_000 },
      logger,
    );
    const events: string[] = [];
    informer.on((event: InformerEvent, object) => events.push(`${event}:${object.metadata.name}`));
    informer.start();
    await informer.synced;
    expect(informer.get(`${ns}/before`)).toBeDefined();

    await client.create(configMaps, configMap('later', 'a'));
    await eventually('add of later', 10_000, async () => informer.get(`${ns}/later`));
    await client.mergePatch(`${configMaps}/later`, { data: { value: 'b' } });
    await eventually('update of later', 10_000, async () =>
      events.includes(`update:later`) ? true : undefined,
    );

    // Cut the watch as a network failure or the watchdog would: it resumes from its resourceVersion.
    (informer as unknown as { abort?: AbortController }).abort?.abort();
    await sleep(300);
    await client.delete(`${configMaps}/before`);
    await eventually('delete after the watch restarted', 10_000, async () =>
      events.includes('delete:before') ? true : undefined,
    );
    expect(informer.get(`${ns}/before`)).toBeUndefined();
    informer.stop();
  });

  test('an unreachable resource backs off and retries instead of giving up', async () => {
    const informer = new Informer<KubeObject>(
      client,
      { path: `/apis/nothing.example.com/v1/widgets`, backoffBaseMs: 50, backoffMaxMs: 200 },
      logger,
    );
    const before = logs.filter((l) => l.includes('widgets')).length;
    informer.start();
    await sleep(1500);
    informer.stop();
    const retries =
      logs.filter((l) => l.includes('widgets') && l.includes('re-listing')).length - before;
    expect(retries).toBeGreaterThanOrEqual(3);
  });
});

describe('LeaderElector', () => {
  function elector(identity: string, name: string, state: { leading: Set<string> }) {
    return new LeaderElector(
      client,
      {
        namespace: ns,
        name,
        identity,
        leaseDurationSeconds: 2,
        renewDeadlineMs: 1500,
        retryPeriodMs: 250,
        onStartedLeading: () => state.leading.add(identity),
        onStoppedLeading: () => state.leading.delete(identity),
      },
      logger,
    );
  }

  test('one leader at a time; a released lease passes on at once, a dead leader within the lease duration', async () => {
    const state = { leading: new Set<string>() };
    const a = elector('a', 'election', state);
    const b = elector('b', 'election', state);
    a.start();
    await eventually('a leads', 10_000, async () => (state.leading.has('a') ? true : undefined));
    b.start();
    await sleep(1000);
    expect([...state.leading]).toEqual(['a']);

    await a.stop();
    // A released lease passes on at b's next try, without waiting out the lease.
    await eventually('b takes over', 10_000, async () =>
      state.leading.has('b') ? true : undefined,
    );
    expect([...state.leading]).toEqual(['b']);

    // b dies without releasing (no renewals any more): c waits out the lease, then leads.
    const c = elector('c', 'election', state);
    c.start();
    await sleep(500);
    expect(state.leading.has('c')).toBe(false);
    (b as unknown as { stopped: boolean; timer?: NodeJS.Timeout }).stopped = true;
    clearTimeout((b as unknown as { timer?: NodeJS.Timeout }).timer);
    const died = Date.now();
    await eventually('c takes over', 15_000, async () =>
      state.leading.has('c') ? true : undefined,
    );
    expect(Date.now() - died).toBeGreaterThanOrEqual(1500);
    await c.stop();
  });
});

describe('SecretKeyStore', () => {
  test('the core over Secrets persists keys and aliases across instances; material stays wrapped', async () => {
    const rootKey = await loadOrCreateRootKey(
      rootKeySecret(client, ns),
      new SecretKeyStore(client, ns),
    );
    const again = await loadOrCreateRootKey(
      rootKeySecret(client, ns),
      new SecretKeyStore(client, ns),
    );
    expect(again.equals(rootKey)).toBe(true);

    const core = await KmsCore.open({
      store: new SecretKeyStore(client, ns),
      rootKey: new RootKey(Buffer.from(rootKey)),
    });
    const { keyId } = await core.createKey({});
    await core.createAlias('alias/store-test', keyId);
    const sealed = core.generateDataKey({ keyId });
    await core.createKeyVersion(keyId);

    const second = await KmsCore.open({
      store: new SecretKeyStore(client, ns),
      rootKey: new RootKey(Buffer.from(rootKey)),
    });
    expect(second.describeKey('alias/store-test').keyId).toBe(keyId);
    expect(
      second.decrypt({ ciphertextBlob: sealed.ciphertextBlob }).plaintext.equals(sealed.plaintext),
    ).toBe(true);

    const secrets = await client.list<KubeObject & { data: Record<string, string> }>(
      `/api/v1/namespaces/${ns}/secrets`,
      { labelSelector: 'kms.datakey.io/store=key' },
    );
    expect(secrets.items).toHaveLength(1);
    const record = Buffer.from(secrets.items[0].data.record, 'base64').toString();
    expect(record).toContain('wrappedMaterial');
  });

  test('a stale replica cannot overwrite a newer record (optimistic concurrency)', async () => {
    const rootKey = await loadOrCreateRootKey(
      rootKeySecret(client, ns),
      new SecretKeyStore(client, ns),
    );
    const storeA = new SecretKeyStore(client, ns);
    const a = await KmsCore.open({ store: storeA, rootKey: new RootKey(Buffer.from(rootKey)) });
    const { keyId } = await a.createKey({ description: 'shared' });
    const b = await KmsCore.open({
      store: new SecretKeyStore(client, ns),
      rootKey: new RootKey(Buffer.from(rootKey)),
    });
    await a.disableKey(keyId);
    const err = await b.createKeyVersion(keyId).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 409 });
    await b.reload();
    expect(b.describeKey(keyId).keyState).toBe('Disabled');
  });
});

// Deletion and ownership: Secrets are garbage-collected with their DataKey, a
// referenced MasterKey's deletion is held, a foreign Secret is never
// overwritten, and a deleted or tampered Secret is restored with the same
// ciphertext.
import { randomBytes } from 'node:crypto';
import type { KubeObject } from '../../src/runtime/kube-client';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  dataKeysPath,
  STANDARD_SECRET_KEYS,
  decode,
  decryptSecret,
  eventsFor,
  getOrUndefined,
  kubectlOk,
  leakScanTests,
  masterKey,
  masterKeysPath,
  readyOf,
  secretsPath,
  useOperatorSuite,
  waitCondition,
  type DataKeyObject,
  type SecretObject,
} from '../helpers/operator-suite';
import { eventually, sleep } from '../helpers/wait';

const suite = useOperatorSuite('lifecycle');
const MK = suite.mk('main');
let op: OperatorProcess;
let control: SecretObject | undefined;
const dkPath = (name: string) => `${dataKeysPath(suite.ns)}/${name}`;
const secretPath = (name: string) => `${secretsPath(suite.ns)}/${name}`;
const LAYOUT = STANDARD_SECRET_KEYS;

beforeAll(async () => {
  op = await suite.start();
  expect((await applyObjects([masterKey(MK)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${MK}`, 'True');
});

async function readyDataKey(name: string, spec: Record<string, unknown> = {}) {
  expect(
    (await applyObjects([dataKey(suite.ns, name, { masterKeyRef: { name: MK }, ...spec })])).code,
  ).toBe(0);
  await waitCondition(dkPath(name), 'True');
  return client.get<SecretObject>(secretPath((spec.secretName as string) ?? name));
}

test('deleting a DataKey garbage-collects its Secret', async () => {
  const secret = await readyDataKey('short-lived');
  expect((await decryptSecret(op, secret)).length).toBe(32);
  await kubectlOk(['delete', 'datakey', 'short-lived', '-n', suite.ns]);
  await eventually('the Secret is garbage-collected', 60_000, async () =>
    (await getOrUndefined(secretPath('short-lived'))) ? undefined : true,
  );
});

test('deleting a referenced MasterKey is held (DeletionBlocked names the DataKeys) until they are gone', async () => {
  const held = suite.mk('held');
  expect((await applyObjects([masterKey(held)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${held}`, 'True');
  for (const n of ['user-a', 'user-b']) {
    expect(
      (await applyObjects([dataKey(suite.ns, n, { masterKeyRef: { name: held } })])).code,
    ).toBe(0);
    await waitCondition(dkPath(n), 'True');
  }
  await kubectlOk(['delete', 'masterkey', held, '--wait=false']);
  const blocked = await waitCondition(`${masterKeysPath}/${held}`, 'False', 'DeletionBlocked');
  expect(blocked.message).toContain(`${suite.ns}/user-a`);
  expect(blocked.message).toContain(`${suite.ns}/user-b`);
  await sleep(2000);
  const still = await getOrUndefined<KubeObject>(`${masterKeysPath}/${held}`);
  expect(still?.metadata.deletionTimestamp).toBeDefined();

  await kubectlOk(['delete', 'datakey', 'user-a', '-n', suite.ns]);
  const fewer = await waitCondition(`${masterKeysPath}/${held}`, 'False', 'DeletionBlocked');
  await eventually('only user-b named', 20_000, async () => {
    const c = readyOf(await getOrUndefined<DataKeyObject>(`${masterKeysPath}/${held}`));
    return c && !c.message.includes('user-a') ? c : undefined;
  });
  expect(fewer.reason).toBe('DeletionBlocked');
  expect(await getOrUndefined(`${masterKeysPath}/${held}`)).toBeDefined();

  await kubectlOk(['delete', 'datakey', 'user-b', '-n', suite.ns]);
  await eventually('the MasterKey is gone', 30_000, async () =>
    (await getOrUndefined(`${masterKeysPath}/${held}`)) ? undefined : true,
  );
});

test.each([
  ['an unrelated Secret', {}],
  ['a Secret carrying our label but no ownerReference', { 'kms.datakey.io/datakey': 'squatter' }],
])('%s of the secretName is never overwritten (SecretConflict)', async (_what, labels) => {
  const name = `taken-${Object.keys(labels).length}`;
  const foreign = await client.create<SecretObject>(secretsPath(suite.ns), {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name, namespace: suite.ns, labels },
    data: { password: Buffer.from('hunter2').toString('base64') },
  });
  expect(
    (
      await applyObjects([
        dataKey(suite.ns, 'squatter', { masterKeyRef: { name: MK }, secretName: name }),
      ])
    ).code,
  ).toBe(0);
  const c = await waitCondition(dkPath('squatter'), 'False', 'SecretConflict');
  expect(c.message).toContain(name);
  await sleep(2000);
  const after = await client.get<SecretObject>(secretPath(name));
  expect(after.data).toEqual(foreign.data);
  expect(after.type).toBe('Opaque');
  expect(after.metadata.resourceVersion).toBe(foreign.metadata.resourceVersion);
  expect(after.metadata.ownerReferences).toBeUndefined();
  await kubectlOk(['delete', 'datakey', 'squatter', '-n', suite.ns]);
  await sleep(1000);
  // Still there: the foreign Secret was never owned, so not collected either.
  expect((await client.get<SecretObject>(secretPath(name))).data).toEqual(foreign.data);
});

describe('a deleted or tampered Secret is restored with the same ciphertext', () => {
  const tampers: [string, (name: string) => Promise<unknown>][] = [
    ['deleted', (n) => client.delete(secretPath(n))],
    [
      'ciphertextBlob replaced',
      (n) =>
        client.mergePatch(secretPath(n), {
          data: { ciphertextBlob: randomBytes(64).toString('base64') },
        }),
    ],
    [
      'encryptionContext changed',
      (n) =>
        client.mergePatch(secretPath(n), {
          data: { encryptionContext: Buffer.from('{"app":"other"}').toString('base64') },
        }),
    ],
    [
      'keyVersionId removed and a key added',
      (n) =>
        client.mergePatch(secretPath(n), {
          data: { keyVersionId: null, extra: Buffer.from('x').toString('base64') },
        }),
    ],
    [
      'label removed',
      (n) =>
        client.mergePatch(secretPath(n), {
          metadata: { labels: { 'kms.datakey.io/datakey': null } },
        }),
    ],
  ];
  test.each(tampers)('%s', async (what, tamper) => {
    const name = `restored-${what.split(' ')[0].toLowerCase()}`;
    const original = await readyDataKey(name);
    const t0 = Date.now();
    await tamper(name);
    const restored = await eventually(`${name} restored`, 30_000, async () => {
      const s = await getOrUndefined<SecretObject>(secretPath(name));
      return s &&
        s.metadata.uid &&
        s.metadata.labels?.['kms.datakey.io/datakey'] === name &&
        Object.keys(s.data ?? {})
          .sort()
          .join() === LAYOUT.join() &&
        s.data?.encryptionContext === original.data?.encryptionContext &&
        s.data?.ciphertextBlob === original.data?.ciphertextBlob
        ? s
        : undefined;
    });
    expect(restored.data).toEqual(original.data);
    control = restored;
    expect(restored.type).toBe('kms.datakey.io/datakey');
    expect(restored.metadata.ownerReferences?.[0]).toMatchObject({
      kind: 'DataKey',
      controller: true,
    });
    const events = await eventually('a SecretRestored event', 15_000, async () => {
      const e = await eventsFor(suite.ns, name, 'SecretRestored');
      return e.length > 0 ? e : undefined;
    });
    expect(events[0].type).toBe('Warning');
    expect(await eventsFor(suite.ns, name, 'DataKeyReissued')).toEqual([]);
    const dk = await client.get<DataKeyObject>(dkPath(name));
    expect(dk.status?.ciphertextBlob).toBe(decode(original.data?.ciphertextBlob));
    expect(readyOf(dk)?.status).toBe('True');
    // The restore settles: no loop of rewrites.
    const rv = (await client.get<SecretObject>(secretPath(name))).metadata.resourceVersion;
    await sleep(2000);
    expect((await client.get<SecretObject>(secretPath(name))).metadata.resourceVersion).toBe(rv);
    expect((await decryptSecret(op, restored)).length).toBe(32);
    expect(Date.now() - t0).toBeLessThan(45_000);
  });
});

leakScanTests(suite, () => control);

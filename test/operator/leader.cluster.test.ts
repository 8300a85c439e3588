// Two replicas in one operator namespace: only the leader reconciles; both serve
// the KMS API, each opening data keys made through the other; after a kill -9 of
// the leader the other takes over once the lease expires, and new DataKeys become
// Ready.
import { hostname } from 'node:os';
import RPCClient from '@alicloud/pop-core';
import type { KubeObject } from '../../src/runtime/kube-client';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  dataKeysPath,
  decryptSecret,
  leakScanTests,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitAllReady,
  waitCondition,
  type SecretObject,
} from '../helpers/operator-suite';
import { eventually } from '../helpers/wait';

const suite = useOperatorSuite('leader');
const MK = suite.mk('main');
const LEASE_SECONDS = 15;
const RETRY_SECONDS = 2;
let replicas: OperatorProcess[];
let leader: OperatorProcess;
let follower: OperatorProcess;
let control: SecretObject | undefined;

type Lease = KubeObject & {
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string };
};
const leasePath = () =>
  `/apis/coordination.k8s.io/v1/namespaces/${suite.operatorNs}/leases/datakey-operator`;

/** Sum of datakey_reconcile_total over all labels. */
async function reconciles(op: OperatorProcess): Promise<number> {
  const text = await op.metrics();
  return [...text.matchAll(/^datakey_reconcile_total\{[^}]*\} (\S+)$/gm)].reduce(
    (sum, m) => sum + Number(m[1]),
    0,
  );
}

beforeAll(async () => {
  // One first, so that it surely leads and the other surely follows.
  const first = await suite.start();
  await eventually('the first replica leads', 20_000, async () =>
    (await first.leader()) === 1 ? true : undefined,
  );
  const second = await suite.start();
  replicas = [first, second];
});

test('exactly one replica leads, holds the Lease, and only it reconciles', async () => {
  const states = async () => Promise.all(replicas.map((r) => r.leader()));
  expect(await states()).toEqual([1, 0]);
  [leader, follower] = replicas;
  const lease = await client.get<Lease>(leasePath());
  expect(lease.spec?.holderIdentity).toBe(`${hostname()}-${leader.pid}`);
  expect(lease.spec?.leaseDurationSeconds).toBe(LEASE_SECONDS);

  expect((await applyObjects([masterKey(MK)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${MK}`, 'True');
  const names = ['one', 'two', 'three'];
  expect(
    (await applyObjects(names.map((n) => dataKey(suite.ns, n, { masterKeyRef: { name: MK } }))))
      .code,
  ).toBe(0);
  await waitAllReady(suite.ns, names.length, 60_000);
  // Not a fixed sleep: two renewals of the lease later, the follower has had its
  // chances (it checks every retry period too) and still reconciled nothing.
  for (let i = 0; i < 2; i++) {
    const renewed = (await client.get<Lease>(leasePath())).spec?.renewTime;
    await eventually('a lease renewal', 30_000, async () =>
      (await client.get<Lease>(leasePath())).spec?.renewTime !== renewed ? true : undefined,
    );
  }
  expect(await states()).toEqual([1, 0]);
  expect(await reconciles(leader)).toBeGreaterThanOrEqual(names.length + 1);
  expect(await reconciles(follower)).toBe(0);
});

/** The official pop-core client, at its defaults, against one replica's KMS API. */
function kmsOf(op: OperatorProcess): RPCClient {
  return new RPCClient({
    endpoint: op.kmsUrl as string,
    apiVersion: '2016-01-20',
    accessKeyId: op.accessKeyId,
    accessKeySecret: op.accessKeySecret,
  });
}

test('both replicas answer Decrypt through their KMS API for a data key made through the other', async () => {
  const mk = await client.get<KubeObject & { status?: { keyId?: string } }>(
    `${masterKeysPath}/${MK}`,
  );
  const keyId = mk.status?.keyId as string;
  const context = JSON.stringify({ test: suite.id });
  for (const [through, other] of [
    [leader, follower],
    [follower, leader],
  ]) {
    // A follower learns a new master key from the shared key store by its periodic reload.
    const made = await eventually('GenerateDataKey through one replica', 45_000, () =>
      kmsOf(through).request<{ Plaintext: string; CiphertextBlob: string }>(
        'GenerateDataKey',
        { KeyId: keyId, EncryptionContext: context },
        { method: 'POST' },
      ),
    );
    const opened = await eventually('Decrypt through the other', 45_000, () =>
      kmsOf(other).request<{ Plaintext: string; KeyId: string }>(
        'Decrypt',
        { CiphertextBlob: made.CiphertextBlob, EncryptionContext: context },
        { method: 'POST' },
      ),
    );
    expect(opened.KeyId).toBe(keyId);
    expect(opened.Plaintext).toBe(made.Plaintext);
    expect(Buffer.from(opened.Plaintext, 'base64').length).toBe(32);
  }
  // And a DataKey's Secret, made by the leader's controller, opens through both.
  const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/one`);
  const [byLeader, byFollower] = await Promise.all(
    [leader, follower].map((op) => decryptSecret(op, secret)),
  );
  expect(byFollower.equals(byLeader)).toBe(true);
});

test('kill -9 of the leader: the follower takes over within the lease duration; new DataKeys become Ready', async () => {
  await leader.kill9();
  const killedAt = Date.now();
  // Applied while nobody leads: picked up by the new leader.
  expect(
    (await applyObjects([dataKey(suite.ns, 'during-gap', { masterKeyRef: { name: MK } })])).code,
  ).toBe(0);
  await eventually('the follower leads', (LEASE_SECONDS + 4 * RETRY_SECONDS) * 1000, async () =>
    (await follower.leader()) === 1 ? true : undefined,
  );
  const tookOverS = (Date.now() - killedAt) / 1000;
  process.stderr.write(`[leader test] takeover ${tookOverS.toFixed(1)} s after kill -9\n`);
  // Not before the dead leader's lease could have expired (a busy machine only makes
  // it later). As in client-go, the follower takes over once the record has not
  // changed for a lease duration of its own clock, counted from when it last *saw* a
  // change (up to one retry period after the last renewal). How soon after is a
  // timing figure (LEASE + 2 * RETRY on an idle machine), not asserted here.
  expect(tookOverS).toBeGreaterThan(LEASE_SECONDS - RETRY_SECONDS - 1);
  const lease = await client.get<Lease>(leasePath());
  expect(lease.spec?.holderIdentity).toBe(`${hostname()}-${follower.pid}`);

  expect(
    (await applyObjects([dataKey(suite.ns, 'after-takeover', { masterKeyRef: { name: MK } })]))
      .code,
  ).toBe(0);
  const all = await waitAllReady(suite.ns, 5, 60_000);
  expect(all.every((d) => d.status?.keyId)).toBe(true);
  for (const n of ['one', 'during-gap', 'after-takeover']) {
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${n}`);
    control = secret;
    // The new leader's KMS opens keys the old leader made, and its own.
    expect((await decryptSecret(follower, secret)).length).toBe(32);
  }
  const dk = await client.get<KubeObject & { status?: { keyId?: string } }>(
    `${dataKeysPath(suite.ns)}/after-takeover`,
  );
  const mk = await client.get<KubeObject & { status?: { keyId?: string } }>(
    `${masterKeysPath}/${MK}`,
  );
  expect(dk.status?.keyId).toBe(mk.status?.keyId);
  expect(await reconciles(follower)).toBeGreaterThan(0);
});

leakScanTests(suite, () => control);

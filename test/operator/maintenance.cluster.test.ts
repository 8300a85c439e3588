// Key maintenance in operator mode, on the leader: keys past their deletion
// window are purged; keys created through --kms-listen rotate on their own
// schedule; a MasterKey's key rotates only through its controller.
import RPCClient from '@alicloud/pop-core';
import type { KubeObject } from '../../src/runtime/kube-client';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  CRDS,
  applyObjects,
  applyShortRotationCrds,
  client,
  kubectlOk,
  masterKey,
  masterKeysPath,
  useOperatorSuite,
  waitCondition,
} from '../helpers/operator-suite';
import { eventually } from '../helpers/wait';

type MasterKeyObject = KubeObject & { status?: { keyId?: string } };

const suite = useOperatorSuite('maintenance');
let op: OperatorProcess;
let kms: RPCClient;

const call = <T>(action: string, params: Record<string, unknown>) =>
  kms.request<T>(action, params, { method: 'POST' });
const versionCount = async (keyId: string) =>
  (await call<{ TotalCount: number }>('ListKeyVersions', { KeyId: keyId, PageSize: 1 })).TotalCount;
const schedulesRotated = async () => {
  const line = (await op.metrics())
    .split('\n')
    .find((l) => l.startsWith('datakey_rotations_total{trigger="schedule"}'));
  return line ? Number(line.split(' ').pop()) : 0;
};

beforeAll(async () => {
  // The test-only CRD variant allows rotation intervals under 7 days.
  await applyShortRotationCrds();
  // One "day" of a deletion window lasts a second: the 7-day minimum passes in 7 s.
  op = await suite.start({ args: ['--min-rotation-interval', '1s', '--deletion-day', '1s'] });
  kms = new RPCClient({
    endpoint: op.kmsUrl as string,
    apiVersion: '2016-01-20',
    accessKeyId: op.accessKeyId,
    accessKeySecret: op.accessKeySecret,
  });
});
afterAll(async () => {
  await kubectlOk(['apply', '-f', CRDS]);
});

test('a deleted MasterKey’s key is purged once its deletion window has passed', async () => {
  const name = suite.mk('deleted');
  expect((await applyObjects([masterKey(name)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${name}`, 'True');
  const keyId = (await client.get<MasterKeyObject>(`${masterKeysPath}/${name}`)).status
    ?.keyId as string;
  expect(
    (await call<{ KeyMetadata: { KeyState: string } }>('DescribeKey', { KeyId: keyId })).KeyMetadata
      .KeyState,
  ).toBe('Enabled');

  await client.delete(`${masterKeysPath}/${name}`);
  const pending = await eventually('the key pending deletion', 20_000, async () => {
    const meta = await call<{ KeyMetadata: { KeyState: string } }>('DescribeKey', { KeyId: keyId });
    return meta.KeyMetadata.KeyState === 'PendingDeletion' ? true : undefined;
  });
  expect(pending).toBe(true);
  const code = await eventually('the key purged', 60_000, async () => {
    try {
      await call('DescribeKey', { KeyId: keyId });
      return undefined;
    } catch (err) {
      return (err as { code?: string }).code;
    }
  });
  expect(code).toBe('Forbidden.KeyNotFound');
});

test('a key created through --kms-listen with automatic rotation rotates on its own', async () => {
  const created = await call<{ KeyMetadata: { KeyId: string } }>('CreateKey', {
    EnableAutomaticRotation: true,
    RotationInterval: '2s',
  });
  const keyId = created.KeyMetadata.KeyId;
  expect(await versionCount(keyId)).toBe(1);
  const count = await eventually('a second key version', 60_000, async () => {
    const n = await versionCount(keyId);
    return n >= 2 ? n : undefined;
  });
  expect(count).toBeGreaterThanOrEqual(2);
});

test('a MasterKey’s key rotates only through its controller (each rotation counted and reported)', async () => {
  const name = suite.mk('auto');
  const before = await schedulesRotated();
  expect(
    (await applyObjects([masterKey(name, { rotation: { automatic: true, interval: '3s' } })])).code,
  ).toBe(0);
  await waitCondition(`${masterKeysPath}/${name}`, 'True');
  const keyId = (await client.get<MasterKeyObject>(`${masterKeysPath}/${name}`)).status
    ?.keyId as string;
  await eventually('three key versions', 60_000, async () =>
    (await versionCount(keyId)) >= 3 ? true : undefined,
  );
  // Stop its rotation, then compare: every version after the first is one the controller made.
  await client.mergePatch(`${masterKeysPath}/${name}`, {
    spec: { rotation: { automatic: false } },
  });
  const settled = await eventually('rotation off in the core', 20_000, async () => {
    const meta = await call<{ KeyMetadata: { AutomaticRotation: string } }>('DescribeKey', {
      KeyId: keyId,
    });
    return meta.KeyMetadata.AutomaticRotation === 'Disabled' ? true : undefined;
  });
  expect(settled).toBe(true);
  const versions = await versionCount(keyId);
  expect((await schedulesRotated()) - before).toBe(versions - 1);
});

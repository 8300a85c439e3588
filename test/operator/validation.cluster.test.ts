// Invalid objects are refused by the API server (CRD schema and CEL rules),
// with a message naming the field; DataKeys wait for a missing or disabled
// MasterKey and recover when it appears or is enabled.
import type { OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  dataKeysPath,
  decryptSecret,
  getOrUndefined,
  kubectlOk,
  leakScanTests,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitCondition,
  type DataKeyObject,
  type Json,
  type SecretObject,
} from '../helpers/operator-suite';

const suite = useOperatorSuite('validation');
const MK = suite.mk('main');
let op: OperatorProcess;
let control: SecretObject | undefined;
const dkPath = (name: string) => `${dataKeysPath(suite.ns)}/${name}`;

beforeAll(async () => {
  op = await suite.start();
  expect((await applyObjects([masterKey(MK)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${MK}`, 'True');
});

/** Applies one object with kubectl; it must be refused with every `expected` text in the message. */
async function expectRefused(object: Json, expected: (string | RegExp)[]): Promise<string> {
  // No client-side schema check: the API server itself must refuse it.
  const r = await applyObjects([object], ['--validate=false']);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/is invalid/);
  for (const text of expected) expect(r.stderr).toMatch(text);
  return r.stderr;
}

describe('refused by the API server, naming the field', () => {
  const dk = (name: string, spec: Json) => dataKey(suite.ns, name, spec);
  const ref = { masterKeyRef: { name: MK } };

  test.each([
    [
      'numberOfBytes 0',
      { ...ref, numberOfBytes: 0 },
      ['spec.numberOfBytes', /greater than or equal to 1/],
    ],
    [
      'numberOfBytes 2000',
      { ...ref, numberOfBytes: 2000 },
      ['spec.numberOfBytes', /less than or equal to 1024/],
    ],
    ['keySpec AES_512', { ...ref, keySpec: 'AES_512' }, ['spec.keySpec', 'AES_512']],
    ['missing masterKeyRef', { keySpec: 'AES_256' }, ['spec.masterKeyRef', /Required/]],
    [
      'encryptionContext key with the reserved prefix',
      { ...ref, encryptionContext: { 'kms.datakey.io/name': 'spoof' } },
      ['spec.encryptionContext', 'reserved'],
    ],
  ])('DataKey with %s', async (_what, spec, expected) => {
    const name = `bad-${Math.random().toString(36).slice(2, 8)}`;
    await expectRefused(dk(name, spec), expected as (string | RegExp)[]);
    expect(await getOrUndefined(dkPath(name))).toBeUndefined();
  });

  test.each([
    ['an alias without the alias/ prefix', { aliases: ['payments'] }, ['spec.aliases[0]']],
    ['the reserved alias/acs', { aliases: ['alias/acs'] }, ['spec.aliases[0]', 'reserved']],
    [
      'rotation interval 1d',
      { rotation: { automatic: true, interval: '1d' } },
      ['spec.rotation.interval', '365d'],
    ],
    [
      'rotation interval 400d',
      { rotation: { automatic: true, interval: '400d' } },
      ['spec.rotation.interval', '365d'],
    ],
    [
      'a malformed interval',
      { rotation: { automatic: true, interval: '2w' } },
      ['spec.rotation.interval'],
    ],
    [
      'automatic rotation without an interval',
      { rotation: { automatic: true } },
      ['spec.rotation', 'rotation.interval is required'],
    ],
  ])('MasterKey with %s', async (_what, spec, expected) => {
    const name = suite.mk(`bad-${Math.random().toString(36).slice(2, 8)}`);
    await expectRefused(masterKey(name, spec), expected);
    expect(await getOrUndefined(`${masterKeysPath}/${name}`)).toBeUndefined();
  });

  test('changing masterKeyRef or secretName of an existing DataKey is refused (immutable)', async () => {
    const original = dk('fixed', { ...ref, secretName: 'fixed-secret' });
    expect((await applyObjects([original])).code).toBe(0);
    await waitCondition(dkPath('fixed'), 'True');
    await expectRefused(
      dk('fixed', { masterKeyRef: { name: suite.mk('other') }, secretName: 'fixed-secret' }),
      ['spec.masterKeyRef is immutable'],
    );
    await expectRefused(dk('fixed', { ...ref, secretName: 'moved-secret' }), [
      'spec.secretName is immutable',
    ]);
    await expectRefused(dk('fixed', { ...ref }), ['spec.secretName is immutable']);
    const now = await client.get<DataKeyObject>(dkPath('fixed'));
    expect(now.spec).toMatchObject({ masterKeyRef: { name: MK }, secretName: 'fixed-secret' });
  });
});

describe('waiting on the MasterKey', () => {
  test('a DataKey for a missing MasterKey is MasterKeyNotFound, and Ready once it is created', async () => {
    const late = suite.mk('late');
    expect(
      (await applyObjects([dataKey(suite.ns, 'early', { masterKeyRef: { name: late } })])).code,
    ).toBe(0);
    const c = await waitCondition(dkPath('early'), 'False', 'MasterKeyNotFound');
    expect(c.message).toContain(late);
    expect(await getOrUndefined(`${secretsPath(suite.ns)}/early`)).toBeUndefined();

    expect((await applyObjects([masterKey(late)])).code).toBe(0);
    // Well before the 30 s slow retry: the MasterKey's events requeue its DataKeys.
    await waitCondition(dkPath('early'), 'True', undefined, 20_000);
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/early`);
    control = secret;
    expect((await decryptSecret(op, secret)).length).toBe(32);
  });

  test('a disabled MasterKey gives MasterKeyDisabled; enabling it recovers, with the same ciphertext', async () => {
    const off = suite.mk('off');
    expect((await applyObjects([masterKey(off, { enabled: false })])).code).toBe(0);
    await waitCondition(`${masterKeysPath}/${off}`, 'True', 'KeyDisabled');
    expect(
      (await applyObjects([dataKey(suite.ns, 'waits', { masterKeyRef: { name: off } })])).code,
    ).toBe(0);
    const c = await waitCondition(dkPath('waits'), 'False', 'MasterKeyDisabled');
    expect(c.message).toContain(off);
    expect(await getOrUndefined(`${secretsPath(suite.ns)}/waits`)).toBeUndefined();

    await kubectlOk(['patch', 'masterkey', off, '--type=merge', '-p', '{"spec":{"enabled":true}}']);
    await waitCondition(dkPath('waits'), 'True', undefined, 20_000);
    const blob = (await client.get<SecretObject>(`${secretsPath(suite.ns)}/waits`)).data
      ?.ciphertextBlob;

    // Disabled again after the key exists: Ready=False, the Secret is left as it is.
    await kubectlOk([
      'patch',
      'masterkey',
      off,
      '--type=merge',
      '-p',
      '{"spec":{"enabled":false}}',
    ]);
    await waitCondition(dkPath('waits'), 'False', 'MasterKeyDisabled', 20_000);
    expect(
      (await client.get<SecretObject>(`${secretsPath(suite.ns)}/waits`)).data?.ciphertextBlob,
    ).toBe(blob);
    await kubectlOk(['patch', 'masterkey', off, '--type=merge', '-p', '{"spec":{"enabled":true}}']);
    await waitCondition(dkPath('waits'), 'True', undefined, 20_000);
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/waits`);
    expect(secret.data?.ciphertextBlob).toBe(blob);
    expect((await decryptSecret(op, secret)).length).toBe(32);
  });
});

leakScanTests(suite, () => control);

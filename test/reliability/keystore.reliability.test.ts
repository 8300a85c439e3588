// The operator's own state (key store and root key, Secrets of its namespace)
// deleted, edited or corrupted by hand: the operator never re-creates or
// overwrites it, is not Ready with a message that names the problem, and
// recovers once the state is put back with the backup and restore commands of
// docs/operator.md, which this file runs as written there.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/kms-process';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  REPO,
  client,
  dataKey,
  dataKeysPath,
  decryptSecret,
  getOrUndefined,
  kubectlBinary,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitAllReady,
  waitCondition,
  type SecretObject,
} from '../helpers/operator-suite';
import { recordFigures } from '../helpers/reliability-figures';
import { eventually } from '../helpers/wait';

const suite = useOperatorSuite('keystore');
const ROOT_KEY = 'datakey-root-key';
const COUNT = 5;
let op: OperatorProcess;
let mkName: string;
let keyId: string;
const digests = new Map<string, string>();
const backupDir = makeTempDir('datakey-backup-');

/** The shell commands of a docs/operator.md section's sh block, for this suite's namespace. */
function documentedCommands(heading: string): string[] {
  const doc = fs.readFileSync(path.join(REPO, 'docs/operator.md'), 'utf8');
  const section = doc.slice(doc.indexOf(`### ${heading}\n`));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error(`docs/operator.md has no sh block under ### ${heading}`);
  return block
    .trim()
    .split('\n')
    .map((line) => line.replaceAll('datakey-system', suite.operatorNs));
}

/** Runs documented commands with bash in the backup folder, kubectl being the test cluster's. */
function runDocumented(heading: string): Promise<void> {
  const script = ['set -euo pipefail', ...documentedCommands(heading)].join('\n');
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      ['-c', script],
      {
        cwd: backupDir,
        env: {
          ...process.env,
          PATH: `${path.dirname(kubectlBinary())}:${process.env.PATH}`,
        },
      },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${heading} failed: ${stderr || stdout}`)) : resolve(),
    );
  });
}

const opNsSecret = (name: string) => `${secretsPath(suite.operatorNs)}/${name}`;
const keySecret = () => `datakey-kms-key-${keyId}`;

async function dataKeyDigests(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (let i = 0; i < COUNT; i++) {
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/dk-${i}`);
    const plaintext = await decryptSecret(op, secret);
    out.set(`dk-${i}`, createHash('sha256').update(plaintext).digest('hex'));
    plaintext.fill(0);
  }
  return out;
}

/** Waits until /readyz says not ready for `why`; returns its text. */
async function notReady(o: OperatorProcess, why: RegExp): Promise<string> {
  return eventually(`/readyz naming ${why}`, 60_000, async () => {
    const r = await o.readyz();
    return r.status === 503 && why.test(r.body) ? r.body : undefined;
  });
}

/** Restores with the documented commands; the seconds until Ready and every DataKey Ready again. */
async function restoreAndConverge(fault: string): Promise<void> {
  const started = Date.now();
  await runDocumented('Restore');
  await eventually('/readyz 200', 120_000, async () =>
    (await op.readyz()).status === 200 ? true : undefined,
  );
  await waitCondition(`${masterKeysPath}/${mkName}`, 'True');
  await waitAllReady(suite.ns, COUNT, 120_000);
  const convergeS = Math.round((Date.now() - started) / 100) / 10;
  const after = await dataKeyDigests();
  const regenerated = [...after].filter(([k, d]) => digests.get(k) !== d).length;
  recordFigures({
    fault,
    lost: 0,
    regenerated,
    crashes: op.alive() ? 0 : 1,
    converge_s: convergeS,
  });
  expect(regenerated).toBe(0);
}

beforeAll(async () => {
  op = await suite.start();
  mkName = suite.mk('store');
  await client.create(masterKeysPath, masterKey(mkName));
  for (let i = 0; i < COUNT; i++) {
    await client.create(
      dataKeysPath(suite.ns),
      dataKey(suite.ns, `dk-${i}`, { masterKeyRef: { name: mkName } }),
    );
  }
  await waitAllReady(suite.ns, COUNT, 120_000);
  keyId = (
    (await client.get(`${masterKeysPath}/${mkName}`)).status as {
      keyId: string;
    }
  ).keyId;
  for (const [k, v] of await dataKeyDigests()) digests.set(k, v);
});

afterAll(() => fs.rmSync(backupDir, { recursive: true, force: true }));

test('the documented backup writes the key store and the root key', async () => {
  await runDocumented('Backup');
  const store = fs.readFileSync(path.join(backupDir, 'datakey-keystore.yaml'), 'utf8');
  expect(store).toContain(keySecret());
  expect(fs.readFileSync(path.join(backupDir, 'datakey-root-key.yaml'), 'utf8')).toContain(
    'rootKey:',
  );
});

test('root key Secret deleted: a restarted operator creates none and is not Ready naming it; restored, it recovers', async () => {
  await client.delete(opNsSecret(ROOT_KEY));
  // The running process still holds the key, but a restart would not start: it says so.
  await notReady(op, new RegExp(`${ROOT_KEY} is missing \\(this process still holds`));
  await op.stop();
  op = await suite.start({ startedMessage: 'key store unusable, not Ready' });
  const body = await notReady(op, /is missing while the key store holds 1 keys/);
  expect(body).toContain(`Secret ${suite.operatorNs}/${ROOT_KEY}`);
  // Reported after its check: no root key was created to get past it.
  expect(await getOrUndefined(opNsSecret(ROOT_KEY))).toBeUndefined();
  await restoreAndConverge('root-key-deleted');
  expect(op.lines.join('\n')).toContain('"msg":"operator started"');
});

test('key Secret deleted while running: not Ready naming the key, the MasterKey KeyMissingFromStore, nothing re-created; restored, Ready', async () => {
  await client.delete(opNsSecret(keySecret()));
  await notReady(
    op,
    new RegExp(`key ${keyId} of MasterKey ${mkName} is missing from the key store`),
  );
  // The MasterKey says why once it is reconciled (a DataKey change makes it so).
  await client.mergePatch(`${masterKeysPath}/${mkName}`, {
    metadata: { annotations: { 'test/poke': '1' } },
  });
  const condition = await waitCondition(
    `${masterKeysPath}/${mkName}`,
    'False',
    'KeyMissingFromStore',
  );
  expect(condition.message).toContain(`Key ${keyId} is missing from the key store`);
  expect(await getOrUndefined(opNsSecret(keySecret()))).toBeUndefined();
  await restoreAndConverge('key-secret-deleted');
});

test('key record corrupted by hand: not Ready naming the Secret, never overwritten; restored, Ready', async () => {
  const before = await client.get<SecretObject>(opNsSecret(keySecret()));
  await client.mergePatch(opNsSecret(keySecret()), {
    data: { record: Buffer.from('{"keyId": "edited by hand').toString('base64') },
  });
  await notReady(
    op,
    new RegExp(
      `key store Secret ${suite.operatorNs}/${keySecret()} holds an unreadable or altered record`,
    ),
  );
  const still = await client.get<SecretObject>(opNsSecret(keySecret()));
  expect(still.data?.record).not.toBe(before.data?.record);
  await restoreAndConverge('key-record-corrupted');
});

test('key record edited to another key version material: not Ready (does not unwrap); restored, Ready', async () => {
  const secret = await client.get<SecretObject>(opNsSecret(keySecret()));
  const record = JSON.parse(Buffer.from(secret.data?.record ?? '', 'base64').toString()) as {
    versions: { wrappedMaterial: string }[];
  };
  const wrapped = Buffer.from(record.versions[0].wrappedMaterial, 'base64');
  wrapped[wrapped.length - 1] ^= 1;
  record.versions[0].wrappedMaterial = wrapped.toString('base64');
  await client.mergePatch(opNsSecret(keySecret()), {
    data: { record: Buffer.from(JSON.stringify(record)).toString('base64') },
  });
  await notReady(op, /cannot be unwrapped: wrong root key or altered record/);
  await restoreAndConverge('key-record-edited');
});

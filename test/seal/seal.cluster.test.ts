// The root of trust: the operator's root key sealed by a KMS key of a `kms serve`
// on loopback (TLS), reached with the operator's own identity (RRSA: a service
// account token of audience sts.aliyuncs.com exchanged at the emulated STS, whose
// OIDC issuer is this cluster's kube-apiserver). No node is needed.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { CLI, makeTempDir } from '../helpers/kms-process';
import {
  ensureServiceAccount,
  mintToken,
  PROVIDER,
  ROLE,
  SEAL_ENV,
  SHORT_ROLE,
  startSealKms,
  STS_AUDIENCE,
  writeFile,
  type SealKms,
} from '../helpers/seal';
import { findNeedles, needlesOf } from '../helpers/leak-scan';
import { allOperatorLines, type OperatorProcess } from '../helpers/operator-process';
import {
  applyObjects,
  client,
  dataKey,
  decryptSecret,
  masterKey,
  masterKeysPath,
  secretsPath,
  useOperatorSuite,
  waitAllReady,
  waitCondition,
  type SecretObject,
} from '../helpers/operator-suite';
import { eventually, sleep } from '../helpers/wait';
import type { KubeObject } from '../../src/runtime/kube-client';
import { httpGet } from '../../src/common/wait';

const suite = useOperatorSuite('seal');
const MK = suite.mk('sealed');
const OPERATOR_SA = 'datakey-operator';
const ROOT_SECRET = 'datakey-root-key';

let dir: string;
let seal: SealKms;
let operatorToken: string;
let op: OperatorProcess;
const plaintexts = new Map<string, string>();
let rootKeyB64: string;

const names = ['dk-0', 'dk-1', 'dk-2'];

beforeAll(async () => {
  dir = makeTempDir('datakey-seal-');
  seal = await startSealKms(dir, [`system:serviceaccount:${suite.operatorNs}:${OPERATOR_SA}`]);
  await client.create('/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: suite.operatorNs },
  });
  await ensureServiceAccount(suite.operatorNs, OPERATOR_SA);
  await ensureServiceAccount(suite.operatorNs, 'someone-else');
  operatorToken = await mintToken(suite.operatorNs, OPERATOR_SA, [STS_AUDIENCE]);
  writeFile(dir, 'operator.token', operatorToken);
}, 120_000);

afterAll(async () => {
  await seal?.kms.stop();
});

function sealArgs(): string[] {
  const endpoint = seal.endpoint();
  return [
    '--seal',
    'alicloudkms',
    '--seal-key-id',
    seal.sealKeyId,
    '--seal-endpoint',
    endpoint,
    '--seal-region',
    'cn-hangzhou',
    '--sts-endpoint',
    endpoint,
    '--seal-check-interval',
    '2s',
  ];
}

function rrsaEnv(tokenFile: string, role = ROLE): NodeJS.ProcessEnv {
  return {
    ...SEAL_ENV,
    ALIBABA_CLOUD_ROLE_ARN: role,
    ALIBABA_CLOUD_OIDC_PROVIDER_ARN: PROVIDER,
    ALIBABA_CLOUD_OIDC_TOKEN_FILE: tokenFile,
    NODE_EXTRA_CA_CERTS: seal.certFile,
  };
}

function startSealed(
  namespaceArgs: string[] = [],
  tokenFile = path.join(dir, 'operator.token'),
): Promise<OperatorProcess> {
  return suite.start({
    args: [...sealArgs(), ...namespaceArgs],
    env: rrsaEnv(tokenFile),
    startedMessage: 'health endpoints serving',
  });
}

async function readyz(o: OperatorProcess): Promise<{ status: number; body: string }> {
  return httpGet(`${o.metricsUrl}/readyz`);
}

async function waitReadyz(o: OperatorProcess, want: RegExp, timeoutMs = 30_000): Promise<string> {
  return eventually(`/readyz matching ${want}`, timeoutMs, async () => {
    const r = await readyz(o);
    const line = `${r.status} ${r.body}`;
    return want.test(line) ? line : undefined;
  });
}

const rootSecret = (ns = suite.operatorNs) =>
  client.get<SecretObject & { metadata: { annotations?: Record<string, string> } }>(
    `${secretsPath(ns)}/${ROOT_SECRET}`,
  );

async function warningEvents(ns: string, reason: string): Promise<KubeObject[]> {
  const list = await client.list<KubeObject & { reason: string; involvedObject: { name: string } }>(
    `/api/v1/namespaces/${ns}/events`,
  );
  return list.items.filter((e) => e.reason === reason && e.involvedObject.name === ROOT_SECRET);
}

async function stsCall(
  form: Record<string, string>,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const body = new URLSearchParams(form).toString();
  return new Promise((resolve, reject) => {
    const req = https.request(
      `https://${seal.endpoint()}/?Action=AssumeRoleWithOIDC&Version=2015-04-01&Format=JSON`,
      {
        method: 'POST',
        ca: readFileSync(seal.certFile),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('a plaintext root key is sealed in place on the first start with a seal; every DataKey opens to the same plaintext', async () => {
  op = await suite.start();
  expect((await applyObjects([masterKey(MK)])).code).toBe(0);
  await waitCondition(`${masterKeysPath}/${MK}`, 'True');
  await applyObjects(names.map((n) => dataKey(suite.ns, n, { masterKeyRef: { name: MK } })));
  await waitAllReady(suite.ns, names.length, 60_000);
  for (const n of names) {
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${n}`);
    plaintexts.set(n, (await decryptSecret(op, secret)).toString('hex'));
  }
  rootKeyB64 = (await rootSecret()).data?.rootKey as string;
  expect(Buffer.from(rootKeyB64, 'base64')).toHaveLength(32);
  expect((await op.stop()).code).toBe(0);

  op = await startSealed();
  await waitReadyz(op, /^200 ok$/);
  const sealed = await rootSecret();
  expect(Object.keys(sealed.data ?? {})).toEqual(['sealedRootKey']);
  expect(sealed.metadata.annotations?.['kms.datakey.io/sealed-by']).toBe(
    `alicloudkms:${seal.sealKeyId}`,
  );
  const blob = JSON.parse(Buffer.from(sealed.data?.sealedRootKey as string, 'base64').toString());
  expect(blob).toMatchObject({ version: 1, seal: 'alicloudkms', keyId: seal.sealKeyId });
  // Only STS credentials reached KMS: the calls carried a security token. (The
  // kms child's log lines arrive asynchronously.)
  await eventually('an STS exchange and a Decrypt in the kms log', 10_000, async () =>
    seal.kms.stdoutLines.some((l) => l.includes('"action":"AssumeRoleWithOIDC"')) &&
    seal.kms.stdoutLines.some((l) => l.includes('"action":"Decrypt"') && l.includes('"status":200'))
      ? true
      : undefined,
  );

  for (const n of names) {
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${n}`);
    expect((await decryptSecret(op, secret)).toString('hex')).toBe(plaintexts.get(n));
  }
  await applyObjects([dataKey(suite.ns, 'dk-after', { masterKeyRef: { name: MK } })]);
  await waitAllReady(suite.ns, names.length + 1, 60_000);
});

test('no Secret in the cluster holds the root key in the clear; a copy of the namespace opened with no seal yields nothing', async () => {
  const rootKey = Buffer.from(rootKeyB64, 'base64');
  const all = await client.list<SecretObject>('/api/v1/secrets');
  const holding = all.items.filter((s) =>
    Object.values(s.data ?? {}).some((v) => {
      const raw = Buffer.from(v, 'base64');
      return raw.includes(rootKey) || raw.includes(Buffer.from(rootKeyB64));
    }),
  );
  expect(holding.map((s) => `${s.metadata.namespace}/${s.metadata.name}`)).toEqual([]);

  const copyNs = `${suite.id}-copy`;
  suite.extraNamespaces.push(copyNs);
  await client.create('/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: copyNs },
  });
  const mine = await client.list<SecretObject & { type?: string }>(secretsPath(suite.operatorNs));
  for (const s of mine.items) {
    if (s.type === 'kubernetes.io/service-account-token') continue;
    await client.create(secretsPath(copyNs), {
      apiVersion: 'v1',
      kind: 'Secret',
      type: s.type,
      metadata: { name: s.metadata.name, labels: s.metadata.labels },
      data: s.data,
    });
  }
  // Today's embedded code, no seal: it refuses the sealed Secret and creates nothing.
  await expect(
    suite
      .start({ args: ['--namespace', copyNs] })
      .catch((err: Error) => Promise.reject(err.message)),
  ).rejects.toMatch(/sealed by a KMS key/);
  const after = await rootSecret(copyNs);
  expect(Object.keys(after.data ?? {})).toEqual(['sealedRootKey']);
});

test('the seal key disabled: the operator stays up, not Ready, named; recovers when the key is back; nothing rewritten', async () => {
  const before = (await rootSecret()).data?.sealedRootKey;
  await seal.pop.request('DisableKey', { KeyId: seal.sealKeyId }, { method: 'POST' });
  try {
    await waitReadyz(op, /^503 not ready: SealKeyUnavailable/);
    expect(await warningEvents(suite.operatorNs, 'SealKeyUnavailable')).not.toHaveLength(0);
    // A restart while it is disabled: up, not Ready, nothing served from a new key.
    expect((await op.stop()).code).toBe(0);
    op = await startSealed();
    await waitReadyz(op, /^503 not ready: SealKeyUnavailable/);
    await sleep(3000);
    expect(op.alive()).toBe(true);
    expect((await readyz(op)).status).toBe(503);
    expect(await op.leader()).toBe(0);
  } finally {
    await seal.pop.request('EnableKey', { KeyId: seal.sealKeyId }, { method: 'POST' });
  }
  await waitReadyz(op, /^200 ok$/);
  expect(await warningEvents(suite.operatorNs, 'SealRecovered')).not.toHaveLength(0);
  expect((await rootSecret()).data?.sealedRootKey).toBe(before);
  for (const n of names) {
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${n}`);
    expect((await decryptSecret(op, secret)).toString('hex')).toBe(plaintexts.get(n));
  }
});

test('the KMS endpoint unreachable mid-term and at start: named, not Ready, recovers when it is back', async () => {
  await seal.kms.stop();
  try {
    await waitReadyz(op, /^503 not ready: SealEndpointUnreachable/);
    expect((await op.stop()).code).toBe(0);
    op = await startSealed();
    await waitReadyz(op, /^503 not ready: SealEndpointUnreachable/);
    expect(await warningEvents(suite.operatorNs, 'SealEndpointUnreachable')).not.toHaveLength(0);
  } finally {
    await seal.start();
  }
  await waitReadyz(op, /^200 ok$/);
  expect(await op.leader()).toBe(1);
});

test('STS refuses a token of another service account and a token of another audience', async () => {
  const other = writeFile(
    dir,
    'other-sa.token',
    await mintToken(suite.operatorNs, 'someone-else', ['sts.aliyuncs.com']),
  );
  const wrongAudience = writeFile(
    dir,
    'wrong-audience.token',
    await mintToken(suite.operatorNs, OPERATOR_SA, [
      'https://kubernetes.default.svc.cluster.local',
    ]),
  );
  const ask = (token: string) =>
    stsCall({
      OIDCProviderArn: PROVIDER,
      RoleArn: ROLE,
      OIDCToken: token,
      RoleSessionName: 'test',
    });
  const ok = await ask(operatorToken);
  expect(ok.status).toBe(200);
  expect(ok.json).toMatchObject({
    Credentials: { AccessKeyId: expect.stringMatching(/^STS\./) },
    AssumedRoleUser: {
      Arn: expect.stringMatching(/^acs:ram::\d{16}:assumed-role\/datakey-seal\/test$/),
    },
    OIDCTokenInfo: { Subject: `system:serviceaccount:${suite.operatorNs}:${OPERATOR_SA}` },
  });
  expect((await ask(readFileSync(other, 'utf8'))).json.Code).toBe(
    'AuthenticationFail.NoPermission',
  );
  expect((await ask(readFileSync(wrongAudience, 'utf8'))).json.Code).toBe(
    'AuthenticationFail.OIDCToken.AudienceNotMatch',
  );
  const [h, p, s] = operatorToken.split('.');
  const forged = Buffer.from(p, 'base64url').toString().replace(OPERATOR_SA, 'someone-else');
  expect((await ask(`${h}.${Buffer.from(forged).toString('base64url')}.${s}`)).json.Code).toBe(
    'AuthenticationFail.OIDCToken.InvalidSignature',
  );
  expect((await ask('not-a-jwt')).json.Code).toBe('AuthenticationFail.OIDCToken.Invalid');

  // An operator started with the other service account's token: named, not Ready.
  const refused = await startSealed([], other);
  await waitReadyz(refused, /^503 not ready: StsRefused: .*AuthenticationFail\.NoPermission/);
  expect(await warningEvents(suite.operatorNs, 'StsRefused')).not.toHaveLength(0);
  expect((await refused.stop()).code).toBe(0);
});

test('a sealed root key restored into another namespace is refused by its context, and re-sealed only when asked', async () => {
  const restoredNs = `${suite.id}-restored`;
  suite.extraNamespaces.push(restoredNs);
  await client.create('/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: restoredNs },
  });
  const original = await rootSecret();
  await client.create(secretsPath(restoredNs), {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kms.datakey.io/root-key',
    metadata: { name: ROOT_SECRET },
    data: original.data,
  });
  expect((await op.stop()).code).toBe(0);
  const restored = await startSealed(['--namespace', restoredNs]);
  await waitReadyz(restored, /^503 not ready: SealContextMismatch/);
  expect((await rootSecret(restoredNs)).data).toEqual(original.data);
  expect((await restored.stop()).code).toBe(0);

  const kubeSystem = await client.get<KubeObject>('/api/v1/namespaces/kube-system');
  const resealed = await startSealed([
    '--namespace',
    restoredNs,
    '--seal-previous-context',
    `cluster=${kubeSystem.metadata.uid},namespace=${suite.operatorNs}`,
  ]);
  await waitReadyz(resealed, /^200 ok$/);
  const after = (await rootSecret(restoredNs)).data?.sealedRootKey;
  expect(after).toBeDefined();
  expect(after).not.toBe(original.data?.sealedRootKey);
  expect((await resealed.stop()).code).toBe(0);
  op = await startSealed();
  await waitReadyz(op, /^200 ok$/);
});

test('credentials are refreshed across an expiry: each call a fresh one; an expired one is refused', async () => {
  // In a child process: NODE_EXTRA_CA_CERTS is how a user hands the CA to the client.
  const script = `
    const { alibabaCredentials } = require(${JSON.stringify(path.resolve(CLI, '../seal/credentials.js'))});
    const { AliCloudKmsSeal } = require(${JSON.stringify(path.resolve(CLI, '../seal/alicloudkms-seal.js'))});
    const Credential = require('@alicloud/credentials');
    (async () => {
      const endpoint = ${JSON.stringify(`127.0.0.1:${seal.kms.port}`)};
      const { credential } = alibabaCredentials(process.env, endpoint);
      const seal = new AliCloudKmsSeal({ keyId: ${JSON.stringify(seal.sealKeyId)}, endpoint, region: 'cn-hangzhou', credential });
      const ids = [];
      for (let i = 0; i < 3; i++) ids.push((await credential.getCredential()).accessKeyId);
      const context = { 'kms.datakey.io/cluster': 'test', 'kms.datakey.io/namespace': 'test' };
      const blob = await seal.seal(Buffer.alloc(32, 7), context);
      const opened = await seal.unseal(blob, context);
      const old = await credential.getCredential();
      await new Promise((r) => setTimeout(r, 7000));
      const stale = (model) => new Credential.default(null, Credential.StaticSTSCredentialsProvider.builder()
        .withAccessKeyId(model.accessKeyId).withAccessKeySecret(model.accessKeySecret)
        .withSecurityToken(model.securityToken).build());
      const attempt = async (cred) => {
        try { await new AliCloudKmsSeal({ keyId: ${JSON.stringify(seal.sealKeyId)}, endpoint, region: 'cn-hangzhou', credential: cred }).seal(Buffer.alloc(32), context); return 'accepted'; }
        catch (err) { return err.message; }
      };
      const fresh = await credential.getCredential();
      const mismatched = { ...old, securityToken: fresh.securityToken };
      const malformed = { ...fresh, securityToken: 'CAIS.garbage' };
      console.log(JSON.stringify({
        ids, opened: opened.equals(Buffer.alloc(32, 7)),
        expired: await attempt(stale(old)),
        fresh: await attempt(stale(fresh)),
        mismatched: await attempt(stale(mismatched)),
        malformed: await attempt(stale(malformed)),
        missing: await attempt(new Credential.default(null, Credential.StaticAKCredentialsProvider.builder()
          .withAccessKeyId(fresh.accessKeyId).withAccessKeySecret(fresh.accessKeySecret).build())),
      }));
    })().catch((err) => { console.error(err); process.exit(1); });`;
  const before = seal.kms.stdoutLines.filter((l) =>
    l.includes('"action":"AssumeRoleWithOIDC"'),
  ).length;
  // Asynchronously: the kms child's log lines are read meanwhile.
  const { stdout: out } = await promisify(execFile)(process.execPath, ['-e', script], {
    cwd: path.resolve(CLI, '../..'),
    env: { ...process.env, ...rrsaEnv(path.join(dir, 'operator.token'), SHORT_ROLE) },
    encoding: 'utf8',
  });
  const result = JSON.parse(out.trim().split('\n').pop() as string);
  expect(new Set(result.ids).size).toBe(3);
  expect(result.opened).toBe(true);
  expect(result.fresh).toBe('accepted');
  expect(result.expired).toMatch(/InvalidSecurityToken\.Expired/);
  expect(result.mismatched).toMatch(/InvalidSecurityToken\.MismatchWithAccessKey/);
  expect(result.malformed).toMatch(/InvalidSecurityToken\.Malformed/);
  expect(result.missing).toMatch(/MissingSecurityToken/);
  // 3 getCredential + seal (Encrypt, Decrypt) + unseal + old + fresh: each one an exchange.
  await eventually('an STS exchange for every call', 10_000, async () => {
    const after = seal.kms.stdoutLines.filter((l) =>
      l.includes('"action":"AssumeRoleWithOIDC"'),
    ).length;
    return after - before >= 7 ? true : undefined;
  });
});

test('going back: --unseal-root-key writes the same root key back in the clear; the embedded default opens every DataKey', async () => {
  expect((await op.stop()).code).toBe(0);
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [CLI, 'operator', '--namespace', suite.operatorNs, ...sealArgs(), '--unseal-root-key'],
    { env: { ...process.env, ...rrsaEnv(path.join(dir, 'operator.token')) }, encoding: 'utf8' },
  );
  expect(stdout).toContain('unsealed');
  const back = await rootSecret();
  expect(back.data).toEqual({ rootKey: rootKeyB64 });
  op = await suite.start();
  for (const n of names) {
    const secret = await client.get<SecretObject>(`${secretsPath(suite.ns)}/${n}`);
    expect((await decryptSecret(op, secret)).toString('hex')).toBe(plaintexts.get(n));
  }
});

test('leak scan: the root key is in no operator or kms log line', () => {
  const needles = needlesOf([rootKeyB64]);
  const logs = [...allOperatorLines, ...seal.kms.stdoutLines, seal.kms.stderr()].join('\n');
  expect(allOperatorLines.length).toBeGreaterThan(0);
  expect(findNeedles(Buffer.from(logs), needles)).toEqual([]);
});

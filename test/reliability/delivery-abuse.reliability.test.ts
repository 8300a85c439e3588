// Delivery endpoint and webhook abuse, sent only to the operator's loopback
// listener (127.0.0.1): floods of bad tokens and of valid-token requests,
// malformed, oversized, slow and mistyped bodies and AdmissionReviews, and the
// delivery cases that had no test (a pod recreated with another UID, an agent
// claiming another pod, a DataKey not Ready, a Secret missing a field, a
// ciphertext that no longer opens, another namespace's DataKey); pods through
// the API server that mount the key volume writable or are huge. Nothing gets
// a 5xx, nothing crashes, legitimate agents are served, and the API server
// sees no more requests than the stated bound.
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { AGENT_AUDIENCE } from '../../src/injection/pod-patch';
import type { KubeObject } from '../../src/runtime/kube-client';
import { freePort } from '../../src/common/wait';
import { CLI } from '../helpers/kms-process';
import type { OperatorProcess } from '../helpers/operator-process';
import {
  client,
  dataKey,
  dataKeysPath,
  eventsFor,
  kmsClient,
  masterKey,
  masterKeysPath,
  obtainedPlaintexts,
  secretsPath,
  useOperatorSuite,
  waitCondition,
  type SecretObject,
} from '../helpers/operator-suite';
import { recordFigures } from '../helpers/reliability-figures';
import { eventually } from '../helpers/wait';

const FULL = process.env.DATAKEY_RELIABILITY === 'full';
const FLOOD = FULL ? 5000 : 1000;
const PER_POD = 2;
const GLOBAL = 20;

const suite = useOperatorSuite('abuse');
let op: OperatorProcess;
let base: string;
let ca: string;
let fivexx = 0;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTPS request to the operator's loopback listener. */
function send(
  pathname: string,
  body: string | Buffer,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  options: { slow?: boolean; declaredOnly?: boolean; chunked?: boolean } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(pathname, base),
      { method: 'POST', ca, headers, timeout: 60_000 },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => {
          if ((res.statusCode ?? 0) >= 500) fivexx++;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text });
          if (options.declaredOnly) req.destroy();
        });
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) =>
      // A slow sender's connection closed by the server is an answer too (status 0).
      options.slow && err.code === 'ECONNRESET'
        ? resolve({ status: 0, headers: {}, body: err.message })
        : reject(err),
    );
    if (options.chunked) {
      // No content-length: the server counts the bytes as they come.
      const data = Buffer.from(body);
      for (let at = 0; at < data.length; at += 64 * 1024) {
        req.write(data.subarray(at, at + 64 * 1024));
      }
      req.end();
      return;
    }
    if (options.declaredOnly) {
      // Announce the size and wait: the server refuses on the declared length alone.
      req.setHeader('content-length', String(Buffer.byteLength(body)));
      req.flushHeaders();
      return;
    }
    if (options.slow) {
      // Headers and a byte, then nothing: the server must end it.
      req.setHeader('content-length', '100');
      req.write('{');
      return;
    }
    req.end(body);
  });
}

const deliver = (token: string, claim: object) =>
  send('/v1/deliver', JSON.stringify(claim), {
    'content-type': 'application/json',
    authorization: `Bearer ${token}`,
  });

/** All the operator's answered API requests (the metric's samples by verb, resource and code). */
async function kubeRequests(): Promise<number> {
  const samples = [
    ...(await op.metrics()).matchAll(/^datakey_kube_api_requests_total\{.*\} (\S+)$/gm),
  ];
  return samples.length === 0 ? NaN : samples.reduce((sum, m) => sum + Number(m[1]), 0);
}

async function createPod(
  name: string,
  inject = 'orders',
  containers: object[] = [{ name: 'app', image: 'busybox' }],
): Promise<KubeObject & { spec?: { initContainers?: { name: string }[] } }> {
  return client.create(`/api/v1/namespaces/${suite.ns}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, annotations: { 'kms.datakey.io/inject': inject } },
    spec: { serviceAccountName: 'app', containers },
  });
}

/** Why the API server refused to create the pod (its admission webhook's message), or ''. */
async function refusal(name: string, inject: string, containers?: object[]): Promise<string> {
  try {
    await createPod(name, inject, containers);
    return '';
  } catch (err) {
    return (err as Error).message;
  }
}

async function boundToken(pod: KubeObject): Promise<string> {
  const r = await client.create<KubeObject & { status: { token: string } }>(
    `/api/v1/namespaces/${suite.ns}/serviceaccounts/app/token`,
    {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: {
        audiences: [AGENT_AUDIENCE],
        expirationSeconds: 3600,
        boundObjectRef: {
          kind: 'Pod',
          apiVersion: 'v1',
          name: pod.metadata.name,
          uid: pod.metadata.uid,
        },
      },
    },
  );
  return r.status.token;
}

/** Sends `count` requests `concurrency` at a time; the answers' statuses, counted. */
async function flood(count: number, concurrency: number, one: (i: number) => Promise<Answer>) {
  const statuses = new Map<number, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const a = await one(next++);
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
      }
    }),
  );
  return statuses;
}

beforeAll(async () => {
  const port = await freePort();
  op = await suite.start({
    args: [
      '--webhook-listen',
      `127.0.0.1:${port}`,
      '--delivery-url',
      `https://127.0.0.1:${port}`,
      '--delivery-rate-limit',
      String(PER_POD),
      '--delivery-global-rate-limit',
      String(GLOBAL),
    ],
  });
  base = `https://127.0.0.1:${port}`;
  const tls = await client.get<SecretObject>(
    `${secretsPath(suite.operatorNs)}/datakey-operator-webhook-tls`,
  );
  ca = Buffer.from(tls.data?.['ca.crt'] ?? '', 'base64').toString();
  const mk = suite.mk('abuse');
  await client.create(masterKeysPath, masterKey(mk));
  await client.create(
    dataKeysPath(suite.ns),
    dataKey(suite.ns, 'orders', { masterKeyRef: { name: mk } }),
  );
  await client.create(
    dataKeysPath(suite.ns),
    dataKey(suite.ns, 'later', { masterKeyRef: { name: 'no-such-mk' } }),
  );
  await client.create(`/api/v1/namespaces/${suite.ns}/serviceaccounts`, {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: 'app' },
  });
  await client.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${suite.ns}/roles`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: 'decrypt' },
    rules: [{ apiGroups: ['kms.datakey.io'], resources: ['datakeys'], verbs: ['decrypt'] }],
  });
  await client.create(`/apis/rbac.authorization.k8s.io/v1/namespaces/${suite.ns}/rolebindings`, {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: 'decrypt' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'decrypt' },
    subjects: [{ kind: 'ServiceAccount', name: 'app', namespace: suite.ns }],
  });
  await waitCondition(`${dataKeysPath(suite.ns)}/orders`, 'True');
});

const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
/** A well-formed service-account-like token signed by a key the cluster does not know. */
function forged(i: number): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${part({ alg: 'RS256', kid: `k${i % 7}` })}.${part({
    exp: Math.floor(Date.now() / 1000) + 600,
    'kubernetes.io': { pod: { uid: `u${i}` } },
  })}`;
  return `${signed}.${sign('sha256', Buffer.from(signed), stranger.privateKey).toString('base64url')}`;
}

test(`a flood of ${FLOOD} bad tokens: all 401, no API request, and a legitimate agent is served meanwhile`, async () => {
  const pod = await createPod('legit-a');
  const token = await boundToken(pod);
  await deliver(forged(0), { keys: ['orders'] }); // reads the JWKS once
  const before = await kubeRequests();
  const floodStarted = Date.now();
  const [statuses, legit] = await Promise.all([
    flood(FLOOD, 32, (i) =>
      deliver(i % 2 ? forged(i) : randomBytes(40).toString('base64url'), { keys: ['orders'] }),
    ),
    deliver(token, { keys: ['orders'], podName: 'legit-a' }),
  ]);
  const after = await kubeRequests();
  expect([...statuses.keys()]).toEqual([401]);
  expect(legit.status).toBe(200);
  obtainedPlaintexts.add(
    (JSON.parse(legit.body) as { keys: { plaintext: string }[] }).keys[0].plaintext,
  );
  // The legitimate delivery costs a TokenReview, a pod read, a SubjectAccessReview and its
  // Event; besides, the operator renews its lease (a read and a write every 2 s): the
  // 1,000 bad tokens cost nothing on top.
  const leaseRequests = 2 * Math.ceil((Date.now() - floodStarted) / 2000 + 1);
  expect(after - before).toBeLessThanOrEqual(5 + leaseRequests);
});

test('a valid-token flood from one pod: 429 with Retry-After beyond its limit; another pod is still served; API requests stay within the bound', async () => {
  const noisy = await createPod('noisy');
  const quiet = await createPod('quiet');
  const [noisyToken, quietToken] = await Promise.all([boundToken(noisy), boundToken(quiet)]);
  const before = await kubeRequests();
  const started = Date.now();
  const retryAfter = new Set<string>();
  const [statuses, quietAnswer] = await Promise.all([
    flood(FLOOD / 5, 16, async () => {
      const a = await deliver(noisyToken, { keys: ['orders'], podName: 'noisy' });
      if (a.status === 429) retryAfter.add(String(a.headers['retry-after']));
      return a;
    }),
    deliver(quietToken, { keys: ['orders'], podName: 'quiet' }),
  ]);
  const seconds = (Date.now() - started) / 1000;
  const delivered = statuses.get(200) ?? 0;
  expect(quietAnswer.status).toBe(200);
  expect(statuses.get(429)).toBeGreaterThan(0);
  expect([...statuses.keys()].sort()).toEqual([200, 429]);
  expect([...retryAfter].every((v) => /^[1-9]\d*$/.test(v))).toBe(true);
  // The per-pod bucket: a second's burst, then the refill rate.
  expect(delivered).toBeLessThanOrEqual(PER_POD * (seconds + 1) + 1);
  // The stated bound: at most global × (2 + keys) API requests a second (+ an Event each).
  // (plus the lease renewals meanwhile: a read and a write every 2 s).
  const leaseRequests = 2 * Math.ceil(seconds / 2 + 1);
  expect((await kubeRequests()) - before).toBeLessThanOrEqual((delivered + 1) * 4 + leaseRequests);
});

test('the agent honours Retry-After: a throttled agent waits and then writes its key', async () => {
  const pod = await createPod('patient');
  const token = await boundToken(pod);
  const dir = fs.mkdtempSync('/dev/shm/datakey-agent-');
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, token, { mode: 0o600 });
  const keys = path.join(dir, 'keys');
  fs.mkdirSync(keys);
  try {
    let text = '';
    let drained = false;
    const out = new Promise<{ code: number | null; text: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          CLI,
          'agent',
          '--url',
          base,
          '--keys',
          'orders',
          '--dir',
          keys,
          '--token-file',
          tokenFile,
          '--timeout',
          '60s',
        ],
        { env: { ...process.env, DATAKEY_AGENT_CA: ca, DATAKEY_POD_NAME: 'patient' } },
      );
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.stderr.on('data', (d: Buffer) => (text += d.toString()));
      child.on('close', (code) => {
        drained = true;
        resolve({ code, text });
      });
    });
    // Keep the pod's bucket empty until the agent says it was told to wait.
    while (!drained && !text.includes('waiting:')) {
      await deliver(token, { keys: ['orders'], podName: 'patient' });
    }
    const result = await out;
    expect(result.text).toMatch(
      /waiting: too many key requests from this pod: retry after \d+ s; next try in \d+ s/,
    );
    expect(result.code).toBe(0);
    const written = fs.readFileSync(path.join(keys, 'orders'));
    obtainedPlaintexts.add(written.toString('base64'));
    written.fill(0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('malformed, oversized, slow and mistyped bodies get 4xx, never a 5xx or a crash', async () => {
  const json = { 'content-type': 'application/json' };
  const cases: [string, Promise<Answer>, number][] = [
    ['not JSON', send('/v1/deliver', '{not json', json), 400],
    ['a forged token', send('/v1/deliver', '{}', { ...json, authorization: 'Bearer x.y.z' }), 401],
    ['a JSON array', send('/v1/deliver', '[1,2]', json), 400],
    ['keys not a list', send('/v1/deliver', '{"keys":"orders"}', json), 400],
    [
      'text/plain',
      send('/v1/deliver', '{"keys":["orders"]}', { 'content-type': 'text/plain' }),
      415,
    ],
    ['no content type', send('/v1/deliver', '{"keys":["orders"]}', {}), 415],
    [
      '17 KiB body',
      send('/v1/deliver', JSON.stringify({ keys: ['a'], pad: 'x'.repeat(17 * 1024) }), json, {
        declaredOnly: true,
      }),
      413,
    ],
    [
      '5 MiB AdmissionReview',
      send('/mutate-pods', Buffer.alloc(5 * 1024 * 1024, 0x20), json, { declaredOnly: true }),
      413,
    ],
    [
      '17 KiB body, chunked',
      send('/v1/deliver', JSON.stringify({ keys: ['a'], pad: 'x'.repeat(17 * 1024) }), json, {
        chunked: true,
      }),
      413,
    ],
    [
      '5 MiB AdmissionReview, chunked',
      send('/mutate-pods', Buffer.alloc(5 * 1024 * 1024, 0x20), json, { chunked: true }),
      413,
    ],
    ['AdmissionReview not JSON', send('/mutate-pods', '<xml/>', json), 400],
    [
      'AdmissionReview without request',
      send('/mutate-pods', '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}', json),
      400,
    ],
    ...[
      ['of v1beta1', { apiVersion: 'admission.k8s.io/v1beta1' }],
      ['of another kind', { kind: 'TokenReview' }],
      ['without a uid', { request: { operation: 'CREATE', object: {} } }],
      ['of a CREATE without object', { request: { uid: 'u', operation: 'CREATE' } }],
      ['nested 100,000 deep', { request: { uid: 'u', operation: 'CREATE', object: 'DEEP' } }],
    ].map(([what, fields]): [string, Promise<Answer>, number] => {
      const review = {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: { uid: 'u', operation: 'CREATE', object: {} },
        ...(fields as object),
      };
      const nested = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
      const text = JSON.stringify(review).replace('"DEEP"', nested);
      return [`AdmissionReview ${what as string}`, send('/mutate-pods', text, json), 400];
    }),
    [
      'AdmissionReview of text/plain',
      send('/mutate-pods', '{}', { 'content-type': 'text/plain' }),
      415,
    ],
    ['report without message', send('/v1/report', '{}', json), 400],
  ];
  for (const [what, answer, status] of cases) {
    expect([what, (await answer).status]).toEqual([what, status]);
  }
  // A body that never arrives: the server ends the request (408, or closes the connection
  // once its request timeout passed); it does not wait forever.
  const slow = await send('/v1/deliver', '', { ...json }, { slow: true });
  expect([408, 0]).toContain(slow.status);
  expect(op.alive()).toBe(true);
  expect(fivexx).toBe(0);
});

test('delivery cases: another pod claimed, a pod recreated with another UID, a DataKey not Ready, a Secret missing a field', async () => {
  const pod = await createPod('edge');
  const token = await boundToken(pod);
  const other = await deliver(token, { keys: ['orders'], podName: 'someone-else' });
  expect(other.status).toBe(403);
  expect(other.body).toContain(`the token belongs to pod ${suite.ns}/edge`);
  const otherUid = await deliver(token, { keys: ['orders'], podUid: 'not-my-uid' });
  expect(otherUid.status).toBe(403);

  await client.request('PATCH', `/api/v1/namespaces/${suite.ns}/pods/edge`, {
    body: { metadata: { annotations: { 'kms.datakey.io/inject': 'orders,later' } } },
    contentType: 'application/merge-patch+json',
  });
  // Polled slower than the per-pod limit, so that the answers are the decisions, not 429s.
  const notReady = await eventually(
    'the not-Ready DataKey refused',
    30_000,
    async () => {
      const a = await deliver(token, { keys: ['later'], podName: 'edge' });
      return a.status === 409 ? a : undefined;
    },
    600,
  );
  expect(notReady.body).toContain('DataKey later is not Ready');

  // The Secret loses a field: refused until the controller restores it from the status copy.
  await client.request('PATCH', `${secretsPath(suite.ns)}/orders`, {
    body: { data: { ciphertextBlob: null } },
    contentType: 'application/merge-patch+json',
  });
  const answers = new Set<number>();
  await eventually(
    'the Secret restored and delivered again',
    60_000,
    async () => {
      const a = await deliver(token, { keys: ['orders'], podName: 'edge' });
      answers.add(a.status);
      return a.status === 200 ? a : undefined;
    },
    600,
  );
  // Refused while incomplete (409), or not yet asked again (429), never anything else.
  expect([...answers].filter((s) => ![200, 409, 429].includes(s))).toEqual([]);

  await client.delete(`/api/v1/namespaces/${suite.ns}/pods/edge`, { gracePeriodSeconds: 0 });
  await eventually('pod edge gone', 30_000, async () =>
    (await client.list(`/api/v1/namespaces/${suite.ns}/pods`)).items.some(
      (p) => p.metadata.name === 'edge',
    )
      ? undefined
      : true,
  );
  await createPod('edge'); // the same name, another UID
  const recreated = await eventually(
    'an answer past the per-pod limit',
    30_000,
    async () => {
      const a = await deliver(token, { keys: ['orders'], podName: 'edge' });
      return a.status === 429 ? undefined : a;
    },
    600,
  );
  expect(recreated.status).toBe(401);
  expect(recreated.body).toContain('no longer exists');
  expect(fivexx).toBe(0);
});

test('pods through the API server: a writable mount of the key volume and another namespace named are refused; a huge pod spec is admitted', async () => {
  const tamper = await refusal('tamper', 'orders', [
    { name: 'app', image: 'busybox' },
    {
      name: 'tamper',
      image: 'busybox',
      volumeMounts: [{ name: 'datakey-keys', mountPath: '/elsewhere' }],
    },
  ]);
  expect(tamper).toContain('container tamper mounts volume datakey-keys writable');
  const qualified = await refusal('qualified', `${suite.ns}-other/foreign`);
  expect(qualified).toContain(`"${suite.ns}-other/foreign" is not a DataKey name`);
  // About 1 MiB of pod spec (the API server takes 3 MiB, etcd 1.5 MiB): admitted and injected.
  const big = await createPod('big', 'orders', [
    { name: 'app', image: 'busybox', env: [{ name: 'BIG', value: 'x'.repeat(1_000_000) }] },
  ]);
  expect(big.spec?.initContainers?.map((c) => c.name)).toEqual(['datakey-agent']);
  expect(op.alive()).toBe(true);
});

test("another namespace's DataKey is never delivered: a pod can only name DataKeys of its own namespace", async () => {
  const other = `${suite.ns}-other`;
  suite.extraNamespaces.push(other);
  await client.create('/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: other },
  });
  await client.create(
    dataKeysPath(other),
    dataKey(other, 'foreign', { masterKeyRef: { name: suite.mk('abuse') } }),
  );
  await waitCondition(`${dataKeysPath(other)}/foreign`, 'True');
  const pod = await createPod('borrower', 'foreign');
  const answer = await deliver(await boundToken(pod), { keys: ['foreign'], podName: 'borrower' });
  expect(answer.status).toBe(409);
  expect(answer.body).toContain(`DataKey foreign does not exist in namespace ${suite.ns}`);
  expect(answer.body).not.toContain('plaintext');
});

test('a ciphertext that no longer opens (its master key disabled in the KMS): 409 naming the KMS error and an Event, never a 5xx; enabled again, delivered', async () => {
  const pod = await createPod('sealed-off');
  const token = await boundToken(pod);
  const { status } = await client.get<KubeObject & { status: { keyId: string } }>(
    `${masterKeysPath}/${suite.mk('abuse')}`,
  );
  const kms = kmsClient(op);
  const call = (action: string) => kms.request(action, { KeyId: status.keyId }, { method: 'POST' });
  await call('DisableKey');
  try {
    const refused = await deliver(token, { keys: ['orders'], podName: 'sealed-off' });
    expect(refused.status).toBe(409);
    expect(refused.body).toContain(
      'the ciphertext of DataKey orders does not open (Rejected.Disabled)',
    );
    const events = await eventually('a DataKeyNotReady Event on the pod', 15_000, async () => {
      const e = await eventsFor(suite.ns, 'sealed-off', 'DataKeyNotReady');
      return e.length > 0 ? e : undefined;
    });
    expect(events[0].message).toContain('does not open (Rejected.Disabled)');
  } finally {
    await call('EnableKey');
  }
  // Polled slower than the per-pod limit, so that the answers are the decisions, not 429s.
  const again = await eventually(
    'delivered again',
    30_000,
    async () => {
      const a = await deliver(token, { keys: ['orders'], podName: 'sealed-off' });
      return a.status === 200 ? a : undefined;
    },
    600,
  );
  obtainedPlaintexts.add(
    (JSON.parse(again.body) as { keys: { plaintext: string }[] }).keys[0].plaintext,
  );
  expect(fivexx).toBe(0);
});

test('across this file: no 5xx, the operator alive and Ready', async () => {
  recordFigures({ fault: 'delivery-abuse', '5xx': fivexx, crashes: op.alive() ? 0 : 1 });
  expect(fivexx).toBe(0);
  expect(op.alive()).toBe(true);
  expect((await op.readyz()).status).toBe(200);
});

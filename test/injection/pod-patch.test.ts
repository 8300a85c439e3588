import {
  admit,
  AGENT_AUDIENCE,
  AGENT_CONTAINER,
  injectionPatch,
  KEYS_VOLUME,
  reviewRequest,
  TOKEN_VOLUME,
  type InjectionConfig,
  type PatchOperation,
  type Pod,
} from '../../src/injection/pod-patch';

const config: InjectionConfig = {
  agentImage: 'example.com/datakey-operator:1.0',
  deliveryUrl: 'https://datakey-operator-webhook.datakey-system.svc',
  caBundle: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
};

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Applies `add` operations the way the API server does (RFC 6902, `-` appends, an index inserts). */
function applyPatch(doc: Json, ops: PatchOperation[]): Json {
  const copy = structuredClone(doc);
  for (const op of ops) {
    const parts = op.path.split('/').slice(1);
    const last = parts.pop() as string;
    let parent: Json = copy;
    for (const p of parts) {
      if (parent[p] === undefined) throw new Error(`${op.path}: ${p} does not exist`);
      parent = parent[p];
    }
    if (Array.isArray(parent)) {
      const index = last === '-' ? parent.length : Number(last);
      if (!(index >= 0 && index <= parent.length)) throw new Error(`${op.path}: bad index`);
      parent.splice(index, 0, op.value);
    } else parent[last] = op.value;
  }
  return copy;
}

function pod(annotations: Record<string, string> | undefined, spec: Json = {}): Pod {
  return {
    metadata: { name: 'app', annotations },
    spec: { containers: [{ name: 'app', image: 'busybox' }], ...spec },
  };
}

const inject = (p: Pod): Json => applyPatch(p as Json, injectionPatch(p, config));
const review = (p: Pod, operation = 'CREATE') =>
  admit({ uid: 'u-1', operation, namespace: 'team', object: p }, config);

describe('injectionPatch', () => {
  test('an annotated pod gets the memory volume, the agent first, and read-only mounts', () => {
    const out = inject(pod({ 'kms.datakey.io/inject': 'orders, payments' }));
    expect(out.spec.volumes).toEqual([
      { name: KEYS_VOLUME, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
      {
        name: TOKEN_VOLUME,
        projected: {
          sources: [
            {
              serviceAccountToken: {
                audience: AGENT_AUDIENCE,
                expirationSeconds: 600,
                path: 'token',
              },
            },
          ],
        },
      },
    ]);
    const [agent] = out.spec.initContainers;
    expect(agent.name).toBe(AGENT_CONTAINER);
    expect(agent.image).toBe(config.agentImage);
    expect(agent.args).toEqual([
      'agent',
      '--url',
      config.deliveryUrl,
      '--keys',
      'orders,payments',
      '--dir',
      '/var/run/datakey',
      '--token-file',
      '/var/run/secrets/datakey/token',
    ]);
    expect(agent.env).toContainEqual({ name: 'DATAKEY_AGENT_CA', value: config.caBundle });
    expect(agent.securityContext).toMatchObject({
      runAsNonRoot: true,
      runAsUser: 65532,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(agent.volumeMounts).toContainEqual({ name: KEYS_VOLUME, mountPath: '/var/run/datakey' });
    expect(out.spec.containers[0].volumeMounts).toEqual([
      { name: KEYS_VOLUME, mountPath: '/var/run/datakey', readOnly: true },
    ]);
    // Only the agent sees the token.
    expect(out.spec.containers[0].volumeMounts).not.toContainEqual(
      expect.objectContaining({ name: TOKEN_VOLUME }),
    );
  });

  test('existing volumes, mounts and init containers are kept; the agent runs before them', () => {
    const before = pod(
      { 'kms.datakey.io/inject': 'orders' },
      {
        volumes: [{ name: 'data', emptyDir: {} }],
        initContainers: [{ name: 'migrate', image: 'busybox' }],
        containers: [
          { name: 'app', image: 'busybox', volumeMounts: [{ name: 'data', mountPath: '/data' }] },
          { name: 'sidecar', image: 'busybox' },
        ],
      },
    );
    const out = inject(before);
    expect(out.spec.volumes.map((v: Json) => v.name)).toEqual(['data', KEYS_VOLUME, TOKEN_VOLUME]);
    expect(out.spec.initContainers.map((c: Json) => c.name)).toEqual([AGENT_CONTAINER, 'migrate']);
    expect(out.spec.initContainers[1].volumeMounts).toEqual([
      { name: KEYS_VOLUME, mountPath: '/var/run/datakey', readOnly: true },
    ]);
    expect(out.spec.containers[0].volumeMounts).toEqual([
      { name: 'data', mountPath: '/data' },
      { name: KEYS_VOLUME, mountPath: '/var/run/datakey', readOnly: true },
    ]);
    expect(out.spec.containers[1].volumeMounts).toHaveLength(1);
  });

  test('a second invocation never injects twice, and mounts only containers added meanwhile', () => {
    const once = inject(pod({ 'kms.datakey.io/inject': 'orders' }));
    expect(injectionPatch(once, config)).toEqual([]);
    once.spec.containers.push({ name: 'late-sidecar', image: 'busybox' });
    const twice = inject(once);
    expect(twice.spec.initContainers.filter((c: Json) => c.name === AGENT_CONTAINER)).toHaveLength(
      1,
    );
    expect(twice.spec.volumes).toHaveLength(2);
    expect(twice.spec.containers[1].volumeMounts).toEqual([
      { name: KEYS_VOLUME, mountPath: '/var/run/datakey', readOnly: true },
    ]);
    expect(injectionPatch(twice, config)).toEqual([]);
  });

  test("the agent writes as the app's user so the 0400 files are readable by it", () => {
    const out = inject(
      pod(
        { 'kms.datakey.io/inject': 'orders' },
        { securityContext: { runAsUser: 1000, runAsGroup: 3000 } },
      ),
    );
    expect(out.spec.initContainers[0].securityContext).toMatchObject({
      runAsUser: 1000,
      runAsGroup: 3000,
    });
    const root = inject(
      pod({ 'kms.datakey.io/inject': 'orders' }, { securityContext: { runAsUser: 0 } }),
    );
    expect(root.spec.initContainers[0].securityContext.runAsUser).toBe(65532);
  });

  test('the path annotation moves the keys', () => {
    const out = inject(
      pod({ 'kms.datakey.io/inject': 'orders', 'kms.datakey.io/inject-path': '/run/keys' }),
    );
    expect(out.spec.containers[0].volumeMounts[0].mountPath).toBe('/run/keys');
    expect(out.spec.initContainers[0].args).toContain('/run/keys');
  });
});

describe('admit', () => {
  test('CREATE of an annotated pod answers a base64 JSON Patch', () => {
    const r = review(pod({ 'kms.datakey.io/inject': 'orders' }));
    expect(r).toMatchObject({ uid: 'u-1', allowed: true, patchType: 'JSONPatch' });
    const ops = JSON.parse(Buffer.from(r.patch as string, 'base64').toString()) as PatchOperation[];
    expect(ops.map((o) => o.path)).toEqual([
      '/spec/containers/0/volumeMounts',
      '/spec/volumes',
      '/spec/initContainers',
    ]);
  });

  test('sidecar mode: a native sidecar (restartPolicy Always) refreshing on the interval, started once the keys are written', () => {
    const out = inject(
      pod({ 'kms.datakey.io/inject': 'orders,payments', 'kms.datakey.io/inject-mode': 'sidecar' }),
    );
    const [agent] = out.spec.initContainers;
    expect(agent.restartPolicy).toBe('Always');
    expect(agent.args.slice(-2)).toEqual(['--refresh-interval', '30s']);
    expect(agent.startupProbe.exec.command.slice(3)).toEqual([
      '/var/run/datakey/orders.generation',
      '/var/run/datakey/payments.generation',
    ]);
    const every = inject(
      pod({
        'kms.datakey.io/inject': 'orders',
        'kms.datakey.io/inject-mode': 'sidecar',
        'kms.datakey.io/refresh-interval': '5m',
      }),
    );
    expect(every.spec.initContainers[0].args.slice(-2)).toEqual(['--refresh-interval', '5m']);
    // The default stays the one-shot init container.
    const once = inject(pod({ 'kms.datakey.io/inject': 'orders' })).spec.initContainers[0];
    expect(once.restartPolicy).toBeUndefined();
    expect(once.args).not.toContain('--refresh-interval');
  });

  test.each([['0s'], ['2d'], ['soon']])('refresh-interval %j is refused', (value) => {
    const r = review(
      pod({
        'kms.datakey.io/inject': 'orders',
        'kms.datakey.io/inject-mode': 'sidecar',
        'kms.datakey.io/refresh-interval': value,
      }),
    );
    expect(r).toMatchObject({ allowed: false, status: { code: 400 } });
    expect(r.status?.message).toMatch(/refresh-interval: .* from 1s to 1d/);
  });

  test('UPDATEs and pods without the annotation pass untouched', () => {
    expect(review(pod({ 'kms.datakey.io/inject': 'orders' }), 'UPDATE')).toEqual({
      uid: 'u-1',
      allowed: true,
    });
    expect(review(pod(undefined))).toEqual({ uid: 'u-1', allowed: true });
    expect(review(pod({ other: 'x' }))).toEqual({ uid: 'u-1', allowed: true });
  });

  test.each([
    ['kms.datakey.io/inject', 'Orders', /kms.datakey.io\/inject: "Orders" is not a DataKey name/],
    ['kms.datakey.io/inject', ' , ', /kms.datakey.io\/inject names no DataKey/],
    ['kms.datakey.io/inject', 'a/../b', /"a\/..\/b" is not a DataKey name/],
    ['kms.datakey.io/inject-path', 'relative', /inject-path: "relative" must be an absolute path/],
    ['kms.datakey.io/inject-path', '/a/../etc', /must be normalized/],
    ['kms.datakey.io/inject-path', '/etc/keys', /is a system directory/],
    ['kms.datakey.io/inject-mode', 'daemon', /inject-mode: "daemon" is not init or sidecar/],
    [
      'kms.datakey.io/refresh-interval',
      '30s',
      /refresh-interval needs kms.datakey.io\/inject-mode/,
    ],
  ])('%s=%j is refused with a message naming it', (annotation, value, message) => {
    const annotations = { 'kms.datakey.io/inject': 'orders', [annotation]: value };
    const r = review(pod(annotations));
    expect(r.allowed).toBe(false);
    expect(r.status?.code).toBe(400);
    expect(r.status?.message).toMatch(message);
    expect(r.patch).toBeUndefined();
  });

  test('a malformed pod is refused with 400, never an exception', () => {
    const malformed = {
      metadata: { annotations: { 'kms.datakey.io/inject': 'orders' } },
      spec: { containers: 'not a list' },
    } as unknown as Pod;
    const r = review(malformed);
    expect(r).toMatchObject({ allowed: false, status: { code: 400 } });
    expect(r.status?.message).toMatch(/^the pod cannot be read/);
  });

  test('a mount already at the key path, or a reserved name taken, is refused', () => {
    const clash = pod(
      { 'kms.datakey.io/inject': 'orders' },
      {
        volumes: [{ name: 'x', emptyDir: {} }],
        containers: [{ name: 'app', volumeMounts: [{ name: 'x', mountPath: '/var/run/datakey' }] }],
      },
    );
    expect(review(clash).status?.message).toMatch(
      /container app already mounts volume x at \/var\/run\/datakey/,
    );
    const reserved = pod(
      { 'kms.datakey.io/inject': 'orders' },
      { volumes: [{ name: KEYS_VOLUME, emptyDir: {} }] },
    );
    expect(review(reserved).status?.message).toMatch(/reserved for injection/);
  });
});

describe('a container the agent did not write for', () => {
  const annotated = { 'kms.datakey.io/inject': 'orders' };

  test('a container of its own mounting the key volume writable is refused, naming it; read-only is left as it is', () => {
    const writable = pod(annotated, {
      containers: [
        { name: 'app', image: 'busybox' },
        {
          name: 'tamper',
          image: 'busybox',
          volumeMounts: [{ name: KEYS_VOLUME, mountPath: '/elsewhere' }],
        },
      ],
    });
    const refused = review(writable);
    expect(refused).toMatchObject({ allowed: false, status: { code: 400 } });
    expect(refused.status?.message).toMatch(
      /^container tamper mounts volume datakey-keys writable; only datakey-agent writes the keys/,
    );
    const explicit = structuredClone(writable);
    (explicit.spec?.containers?.[1].volumeMounts ?? [])[0].readOnly = false;
    expect(review(explicit).allowed).toBe(false);

    // Read-only elsewhere in its own pod: the keys it may read anyway, at another path.
    const readOnly = structuredClone(writable);
    (readOnly.spec?.containers?.[1].volumeMounts ?? [])[0].readOnly = true;
    const out = inject(readOnly);
    expect(out.spec.containers[1].volumeMounts).toEqual([
      { name: KEYS_VOLUME, mountPath: '/elsewhere', readOnly: true },
    ]);
    expect(out.spec.containers[0].volumeMounts).toEqual([
      { name: KEYS_VOLUME, mountPath: '/var/run/datakey', readOnly: true },
    ]);
  });

  test('an init container of its own mounting the key volume writable is refused too, also on a reinvocation', () => {
    const initWriter = pod(annotated, {
      initContainers: [
        { name: 'seed', image: 'busybox', volumeMounts: [{ name: KEYS_VOLUME, mountPath: '/k' }] },
      ],
    });
    expect(review(initWriter).status?.message).toMatch(
      /^container seed mounts volume datakey-keys writable/,
    );
    // Another webhook added a writer after the first injection: the reinvocation refuses it.
    const injected = inject(pod(annotated)) as Pod;
    injected.spec?.containers?.push({
      name: 'late',
      image: 'busybox',
      volumeMounts: [{ name: KEYS_VOLUME, mountPath: '/var/run/datakey', readOnly: false }],
    });
    expect(review(injected).status?.message).toMatch(/^container late mounts volume/);
  });

  test('an app container named like the agent is refused (the name is reserved)', () => {
    const r = review(
      pod(annotated, { containers: [{ name: AGENT_CONTAINER, image: 'example.com/mine' }] }),
    );
    expect(r).toMatchObject({ allowed: false, status: { code: 400 } });
    expect(r.status?.message).toMatch(/reserved for injection/);
  });

  test('containers running as different users: the files belong to none of them (the agent runs as 65532, files 0400)', () => {
    const out = inject(
      pod(annotated, {
        securityContext: { runAsUser: 1000 },
        containers: [
          { name: 'app', image: 'busybox' },
          { name: 'other', image: 'busybox', securityContext: { runAsUser: 2000 } },
        ],
      }),
    );
    expect(out.spec.initContainers[0].securityContext.runAsUser).toBe(65532);
    for (const c of out.spec.containers) {
      expect(c.volumeMounts).toEqual([
        { name: KEYS_VOLUME, mountPath: '/var/run/datakey', readOnly: true },
      ]);
    }
  });

  test('another namespace cannot be named: the annotation takes DataKey names of the pod’s own namespace only', () => {
    for (const value of ['shop/orders', 'orders,shop/payments', '../shop/orders']) {
      const r = review(pod({ 'kms.datakey.io/inject': value }));
      expect(r).toMatchObject({ allowed: false, status: { code: 400 } });
      expect(r.status?.message).toMatch(/is not a DataKey name/);
    }
  });
});

describe('reviewRequest (the AdmissionReview the API server sends)', () => {
  const valid = {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: { uid: 'u-1', operation: 'CREATE', namespace: 'team', object: pod({}) },
  };

  test('an admission.k8s.io/v1 AdmissionReview: its request', () => {
    expect(reviewRequest(valid)).toBe(valid.request);
    const update = { ...valid, request: { uid: 'u-2', operation: 'DELETE' } };
    expect(reviewRequest(update)).toEqual({ uid: 'u-2', operation: 'DELETE' });
  });

  test.each([
    ['null', null, 'the body must be a JSON object'],
    ['an array', [valid], 'the body must be a JSON object'],
    ['a string', 'AdmissionReview', 'the body must be a JSON object'],
    ['v1beta1', { ...valid, apiVersion: 'admission.k8s.io/v1beta1' }, 'apiVersion must be'],
    ['no apiVersion', { ...valid, apiVersion: undefined }, 'apiVersion must be'],
    ['another kind', { ...valid, kind: 'TokenReview' }, 'kind must be AdmissionReview'],
    ['no request', { ...valid, request: undefined }, 'request is missing'],
    ['request a list', { ...valid, request: [valid.request] }, 'request is missing'],
    ['no uid', { ...valid, request: { ...valid.request, uid: undefined } }, 'request.uid'],
    ['a numeric uid', { ...valid, request: { ...valid.request, uid: 7 } }, 'request.uid'],
    ['an empty uid', { ...valid, request: { ...valid.request, uid: '' } }, 'request.uid'],
    [
      'a huge uid',
      { ...valid, request: { ...valid.request, uid: 'u'.repeat(129) } },
      'request.uid',
    ],
    [
      'a namespace object',
      { ...valid, request: { ...valid.request, namespace: { name: 'team' } } },
      'request.namespace must be a namespace name',
    ],
    [
      'a CREATE without object',
      { ...valid, request: { ...valid.request, object: undefined } },
      'request.object (the pod) is missing',
    ],
    [
      'a CREATE of a string',
      { ...valid, request: { ...valid.request, object: 'pod' } },
      'request.object (the pod) is missing',
    ],
  ])('%s is refused, naming the field', (_what, body, message) => {
    expect(() => reviewRequest(body)).toThrow(message);
  });
});

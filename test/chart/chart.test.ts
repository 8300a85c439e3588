// charts/datakey-operator rendered and linted by the real helm 3 and helm 4:
// the objects it produces (restricted pods, probes, webhook, RBAC) and the
// values schema that refuses a wrong value at install time.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as load } from 'yaml';
import { serviceClient, webhookConfiguration } from '../../src/injection/registration';
import {
  CHART,
  HELMS,
  HELM_BUILD_TIMEOUT_MS,
  RELEASE_NS,
  helm,
  helmBinaries,
  one,
  render,
  type Rendered,
} from '../helpers/helm';

type Json = Record<string, unknown>;
interface Container extends Json {
  image: string;
  args: string[];
  securityContext: Json;
  ports: Json[];
  livenessProbe: Json;
  readinessProbe: Json;
}
interface PodSpec extends Json {
  securityContext: Json;
  containers: Container[];
  topologySpreadConstraints?: Json[];
  volumes?: Json[];
}
const podSpec = (d: Rendered) => (d.spec as { template: { spec: PodSpec } }).template.spec;
const container = (d: Rendered) => podSpec(d).containers[0];

beforeAll(() => helmBinaries(), HELM_BUILD_TIMEOUT_MS);

test('Chart.yaml: apiVersion v2, version and appVersion 0.1.0, same as package.json', () => {
  const chart = load(fs.readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as Json;
  const pkg = JSON.parse(fs.readFileSync(path.join(CHART, '../../package.json'), 'utf8'));
  expect(chart).toMatchObject({ apiVersion: 'v2', name: 'datakey-operator', version: '0.1.0' });
  expect(String(chart.appVersion)).toBe(pkg.version);
});

describe.each(HELMS)('%s', (_label, major) => {
  test('helm lint and helm lint --strict pass', async () => {
    for (const args of [
      ['lint', CHART],
      ['lint', '--strict', CHART],
    ]) {
      const r = await helm(major, args);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    }
  });

  test('renders the documented objects, optional ones only when enabled', async () => {
    const kinds = (await render(major)).map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(kinds).toEqual(
      [
        'ClusterRole/datakey-operator',
        'ClusterRoleBinding/datakey-operator',
        'Deployment/datakey-operator',
        'MutatingWebhookConfiguration/datakey-operator',
        'PodDisruptionBudget/datakey-operator',
        'Role/datakey-operator',
        'RoleBinding/datakey-operator',
        'Service/datakey-operator-metrics',
        'Service/datakey-operator-webhook',
        'ServiceAccount/datakey-operator',
      ].sort(),
    );
    const all = await render(major, {
      args: ['--set', 'metrics.serviceMonitor.enabled=true,networkPolicy.enabled=true'],
    });
    expect(all.map((o) => o.kind)).toEqual(
      expect.arrayContaining(['ServiceMonitor', 'NetworkPolicy']),
    );
  });

  test.each([
    [['--set', 'replicaCount=-1'], '/replicaCount', 'minimum'],
    [['--set', 'replicaCount=two'], '/replicaCount', 'integer'],
    [['--set', 'image.pullPolicy=Sometimes'], '/image/pullPolicy', 'IfNotPresent'],
    [['--set', 'image.repository=Not A Repo'], '/image/repository', 'pattern'],
    [['--set', 'replicas=3'], "additional properties 'replicas'", 'not allowed'],
    [['--set', 'podDisruptionBudget.minAvailable=0'], '/podDisruptionBudget/minAvailable', ''],
    [['--set', 'injection.rateLimit.perPod=-1'], '/injection/rateLimit/perPod', 'minimum'],
    [['--set', 'injection.rateLimit.global=fast'], '/injection/rateLimit/global', 'integer'],
    [['--set', 'kmsInstanceApi.port=70000'], '/kmsInstanceApi/port', 'maximum'],
  ])('values.schema.json refuses %j with a message naming the value', async (args, names, why) => {
    const r = await helm(major, ['template', 'datakey-operator', CHART, ...args]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("values don't meet the specifications of the schema");
    expect(r.stderr).toContain(names);
    expect(r.stderr).toContain(why);
  });
});

describe('rendered objects (helm 3; helm 4 renders the same)', () => {
  let objects: Rendered[];
  beforeAll(async () => {
    objects = await render('helm');
  });

  test('helm 3 and helm 4 render identical manifests', async () => {
    expect(await render('helm4')).toEqual(objects);
  });

  test('Deployment: 2 replicas, restricted pod and container security, soft spread', () => {
    const d = one(objects, 'Deployment');
    expect((d.spec as Json).replicas).toBe(2);
    const pod = podSpec(d);
    expect(pod.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      fsGroup: 65532,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(container(d).securityContext).toEqual({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(pod.serviceAccountName).toBe('datakey-operator');
    expect(pod.terminationGracePeriodSeconds).toBe(30);
    expect(pod.topologySpreadConstraints).toEqual([
      expect.objectContaining({ whenUnsatisfiable: 'ScheduleAnyway', maxSkew: 1 }),
    ]);
    expect(container(d).resources).toEqual({
      requests: { cpu: '50m', memory: '128Mi' },
      limits: { memory: '512Mi' },
    });
  });

  test('Deployment: operator args, image, ports and probes on the metrics port', () => {
    const c = container(one(objects, 'Deployment'));
    expect(c.image).toBe('datakey.local/datakey-operator:0.1.0');
    expect(c.imagePullPolicy).toBe('IfNotPresent');
    expect(c.args).toEqual([
      'operator',
      '--namespace',
      RELEASE_NS,
      '--metrics-listen',
      '0.0.0.0:8080',
      '--webhook-listen',
      '0.0.0.0:9443',
      '--webhook-service',
      'datakey-operator-webhook',
      '--webhook-configuration',
      'datakey-operator',
      '--webhook-secret',
      'datakey-operator-webhook-tls',
      '--agent-image',
      'datakey.local/datakey-operator:0.1.0',
      '--delivery-rate-limit',
      '2',
      '--delivery-global-rate-limit',
      '50',
    ]);
    expect(c.ports).toEqual([
      { name: 'https', containerPort: 9443, protocol: 'TCP' },
      { name: 'metrics', containerPort: 8080, protocol: 'TCP' },
    ]);
    expect(c.livenessProbe).toMatchObject({ httpGet: { path: '/healthz', port: 'metrics' } });
    expect(c.readinessProbe).toMatchObject({ httpGet: { path: '/readyz', port: 'metrics' } });
  });

  test('Services: webhook 443 → https (9443), metrics 8080, both select the operator pods', () => {
    const selector = ((one(objects, 'Deployment').spec as Json).selector as Json).matchLabels;
    const webhook = one(objects, 'Service', 'datakey-operator-webhook').spec as Json;
    const metrics = one(objects, 'Service', 'datakey-operator-metrics').spec as Json;
    expect(webhook.ports).toEqual([
      { name: 'https', port: 443, targetPort: 'https', protocol: 'TCP' },
    ]);
    expect(metrics.ports).toEqual([
      { name: 'metrics', port: 8080, targetPort: 'metrics', protocol: 'TCP' },
    ]);
    expect(webhook.selector).toEqual(selector);
    expect(metrics.selector).toEqual(selector);
  });

  test('PodDisruptionBudget minAvailable 1 over the operator pods; none with one replica', async () => {
    const pdb = one(objects, 'PodDisruptionBudget').spec as Json;
    expect(pdb).toEqual({
      minAvailable: 1,
      selector: (one(objects, 'Deployment').spec as Json).selector,
    });
    const single = await render('helm', { args: ['--set', 'replicaCount=1'] });
    expect(single.filter((o) => o.kind === 'PodDisruptionBudget')).toEqual([]);
  });

  test("MutatingWebhookConfiguration: the operator's own (webhookConfiguration), service-routed, no caBundle", () => {
    // One definition: what the operator registers outside a cluster is what the chart installs.
    const expected = webhookConfiguration(
      'datakey-operator',
      RELEASE_NS,
      serviceClient('datakey-operator-webhook', RELEASE_NS),
    );
    const mwc = one(objects, 'MutatingWebhookConfiguration');
    expect(mwc.webhooks).toEqual(expected.webhooks);
    expect(JSON.stringify(mwc)).not.toContain('caBundle');
  });

  test('RBAC: no wildcard, no write on pods, webhook configuration limited to its own name', () => {
    const rules = [
      ...(one(objects, 'ClusterRole').rules as Json[]),
      ...(one(objects, 'Role').rules as Json[]),
    ] as { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[];
    for (const r of rules) {
      expect([...r.apiGroups, ...r.resources, ...r.verbs]).not.toContain('*');
      if (r.resources.includes('pods')) expect(r.verbs).toEqual(['get']);
      if (r.resources.includes('mutatingwebhookconfigurations'))
        expect(r.resourceNames).toEqual(['datakey-operator']);
    }
    for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
      expect(one(objects, kind).subjects).toEqual([
        { kind: 'ServiceAccount', name: 'datakey-operator', namespace: RELEASE_NS },
      ]);
    }
    expect(one(objects, 'Role').metadata.namespace).toBe(RELEASE_NS);
  });

  test('workload restarts: get, list, watch and patch on the workload kinds only when enabled', async () => {
    const workloadRule = (objs: Rendered[]) =>
      ((one(objs, 'ClusterRole').rules as Json[]) ?? []).find((r) =>
        (r.apiGroups as string[]).includes('apps'),
      );
    expect(workloadRule(objects)).toBeUndefined();
    const enabled = await render('helm', { args: ['--set', 'workloadRestarts.enabled=true'] });
    expect(workloadRule(enabled)).toEqual({
      apiGroups: ['apps'],
      resources: ['deployments', 'statefulsets', 'daemonsets'],
      verbs: ['get', 'list', 'watch', 'patch'],
    });
  });

  test('another namespace and image tag: everything follows them', async () => {
    const other = await render('helm', { args: ['--set', 'image.tag=dev'], namespace: 'keys' });
    const c = container(one(other, 'Deployment'));
    expect(c.image).toBe('datakey.local/datakey-operator:dev');
    expect(
      c.args.slice(c.args.indexOf('--agent-image'), c.args.indexOf('--agent-image') + 2),
    ).toEqual(['--agent-image', 'datakey.local/datakey-operator:dev']);
    expect(c.args.slice(0, 3)).toEqual(['operator', '--namespace', 'keys']);
    const webhook = (one(other, 'MutatingWebhookConfiguration').webhooks as Json[])[0] as {
      clientConfig: { service: Json };
      namespaceSelector: { matchExpressions: Json[] };
    };
    expect(webhook.clientConfig.service.namespace).toBe('keys');
    expect(webhook.namespaceSelector.matchExpressions[0].values).toEqual(['keys']);
    for (const o of other.filter(
      (x) => !x.kind.startsWith('Cluster') && !x.kind.startsWith('Mutating'),
    ))
      expect(o.metadata.namespace).toBe('keys');
  });

  test("seal with RRSA: seal flags, the projected STS token at ACK's path, the CA, no static credential", async () => {
    const rrsa = [
      '--set',
      'seal.alicloudkms.keyId=alias/datakey-seal,seal.alicloudkms.endpoint=kms-vpc.cn-hangzhou.aliyuncs.com',
      '--set',
      'seal.alicloudkms.region=cn-hangzhou,seal.alicloudkms.caSecret=seal-ca',
      '--set',
      'rrsa.roleArn=acs:ram::1234:role/datakey-seal,rrsa.oidcProviderArn=acs:ram::1234:oidc-provider/ack-rrsa-c1',
      '--set',
      'rrsa.stsEndpoint=sts-vpc.cn-hangzhou.aliyuncs.com,rrsa.stsRegion=cn-hangzhou',
    ];
    const objects = await render('helm', { args: rrsa });
    const deployment = one(objects, 'Deployment');
    const c = container(deployment) as Container & {
      env: { name: string; value: string }[];
      envFrom?: Json[];
      volumeMounts: Json[];
    };
    expect(c.args.slice(c.args.indexOf('--seal'))).toEqual([
      '--seal',
      'alicloudkms',
      '--seal-key-id',
      'alias/datakey-seal',
      '--seal-endpoint',
      'kms-vpc.cn-hangzhou.aliyuncs.com',
      '--seal-region',
      'cn-hangzhou',
      '--sts-endpoint',
      'sts-vpc.cn-hangzhou.aliyuncs.com',
    ]);
    expect(Object.fromEntries(c.env.map((e) => [e.name, e.value]))).toEqual({
      ALIBABA_CLOUD_ECS_METADATA_DISABLED: 'true',
      ALIBABA_CLOUD_ROLE_ARN: 'acs:ram::1234:role/datakey-seal',
      ALIBABA_CLOUD_OIDC_PROVIDER_ARN: 'acs:ram::1234:oidc-provider/ack-rrsa-c1',
      ALIBABA_CLOUD_OIDC_TOKEN_FILE: '/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token',
      ALIBABA_CLOUD_STS_REGION: 'cn-hangzhou',
      NODE_EXTRA_CA_CERTS: '/etc/datakey/seal-ca/ca.crt',
    });
    expect(c.envFrom).toBeUndefined();
    expect(podSpec(deployment).volumes).toEqual([
      {
        name: 'rrsa-oidc-token',
        projected: {
          sources: [
            {
              serviceAccountToken: {
                path: 'token',
                audience: 'sts.aliyuncs.com',
                expirationSeconds: 3600,
              },
            },
          ],
        },
      },
      {
        name: 'seal-ca',
        secret: { secretName: 'seal-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] },
      },
    ]);
    // No static credential anywhere in the release.
    const text = JSON.stringify(objects);
    expect(text).not.toMatch(/ACCESS_KEY|credentialsSecret/);
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
    const role = JSON.stringify(objects.filter((o) => o.kind.includes('Role')));
    expect(role).toContain('kube-system');

    // Static keys and RRSA exclude each other; a seal needs one of them.
    await expect(
      render('helm', { args: [...rrsa, '--set', 'seal.alicloudkms.credentialsSecret=ali'] }),
    ).rejects.toThrow(/exclude each other/);
    await expect(
      render('helm', {
        args: [
          '--set',
          'seal.alicloudkms.keyId=k,seal.alicloudkms.endpoint=h,seal.alicloudkms.region=r',
        ],
      }),
    ).rejects.toThrow(/needs credentials/);
  });

  test('NetworkPolicy (when enabled): 9443 from anywhere, 8080 from the configured peers', async () => {
    const np = one(
      await render('helm', {
        args: [
          '--set',
          'networkPolicy.enabled=true',
          '--set-json',
          'networkPolicy.metricsFrom=[{"podSelector":{"matchLabels":{"app":"scraper"}}}]',
        ],
      }),
      'NetworkPolicy',
    ).spec as Json;
    expect(np.policyTypes).toEqual(['Ingress']);
    expect(np.ingress).toEqual([
      { ports: [{ port: 9443, protocol: 'TCP' }] },
      {
        from: [{ podSelector: { matchLabels: { app: 'scraper' } } }],
        ports: [{ port: 8080, protocol: 'TCP' }],
      },
    ]);
  });

  test('injection.rateLimit.{perPod,global} become the delivery rate-limit flags', async () => {
    const c = container(
      one(
        await render('helm', {
          args: ['--set', 'injection.rateLimit.perPod=7,injection.rateLimit.global=0'],
        }),
        'Deployment',
      ),
    );
    const at = c.args.indexOf('--delivery-rate-limit');
    expect(c.args.slice(at, at + 4)).toEqual([
      '--delivery-rate-limit',
      '7',
      '--delivery-global-rate-limit',
      '0',
    ]);
  });

  test('KMS Instance API (kmsInstanceApi.enabled): flags, container port 9444, its Service on kmsInstanceApi.port', async () => {
    expect(objects.some((o) => o.metadata.name === 'datakey-operator-kms-instance')).toBe(false);
    expect(container(one(objects, 'Deployment')).args).not.toContain('--kms-instance-listen');
    const on = await render('helm', {
      args: [
        '--set',
        'kmsInstanceApi.enabled=true,kmsInstanceApi.port=8443,networkPolicy.enabled=true',
      ],
    });
    const c = container(one(on, 'Deployment'));
    const svc = 'datakey-operator-kms-instance';
    const flags = c.args.join(' ');
    expect(flags).toContain('--kms-instance-listen 0.0.0.0:9444');
    for (const host of [
      svc,
      `${svc}.${RELEASE_NS}.svc`,
      `${svc}.${RELEASE_NS}.svc.cluster.local`,
    ]) {
      expect(flags).toContain(`--kms-instance-host ${host} `.trimEnd());
    }
    expect(c.ports).toContainEqual({ name: 'kms-instance', containerPort: 9444, protocol: 'TCP' });
    const service = one(on, 'Service', svc).spec as Json;
    expect(service.ports).toEqual([
      { name: 'kms-instance', port: 8443, targetPort: 'kms-instance', protocol: 'TCP' },
    ]);
    const np = one(on, 'NetworkPolicy').spec as { ingress: { ports: Json[] }[] };
    expect(np.ingress[0].ports).toContainEqual({ port: 9444, protocol: 'TCP' });
  });

  test('ServiceMonitor (when enabled) scrapes the metrics Service only', async () => {
    const rendered = await render('helm', {
      args: ['--set', 'metrics.serviceMonitor.enabled=true'],
    });
    const sm = one(rendered, 'ServiceMonitor');
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    const labels = one(rendered, 'Service', 'datakey-operator-metrics').metadata.labels ?? {};
    const wanted = ((sm.spec as Json).selector as { matchLabels: Record<string, string> })
      .matchLabels;
    expect(labels).toMatchObject(wanted);
    const webhookLabels = one(rendered, 'Service', 'datakey-operator-webhook').metadata.labels;
    expect(webhookLabels).not.toMatchObject(wanted);
    expect((sm.spec as Json).endpoints).toEqual([
      { port: 'metrics', path: '/metrics', interval: '30s' },
    ]);
  });
});

test('NOTES.txt (helm 4 --dry-run=client): what to apply next and how CRDs are removed', async () => {
  const r = await helm('helm4', [
    'install',
    'datakey-operator',
    CHART,
    '-n',
    RELEASE_NS,
    '--dry-run=client',
  ]);
  expect(r.code).toBe(0);
  const notes = r.stdout.slice(r.stdout.indexOf('NOTES:'));
  for (const text of [
    'kind: MasterKey',
    'kind: DataKey',
    'kms.datakey.io/inject',
    'kubectl wait --for=condition=Ready',
    'kubectl delete crd masterkeys.kms.datakey.io datakeys.kms.datakey.io',
  ])
    expect(notes).toContain(text);
});

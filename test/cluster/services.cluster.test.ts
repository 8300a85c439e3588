// The node's Service network: kube-proxy (ClusterIPs from pods and from the
// host), CoreDNS behind the kube-dns Service, and pods reaching the API server
// through the `kubernetes` Service with in-cluster config, as the operator will.
import { CoreV1Api, KubeConfig, RbacAuthorizationV1Api, type V1Pod } from '@kubernetes/client-node';
import { httpGet } from '../../src/common/wait';
import {
  buildAndImport,
  imageBuildUnsupported,
  OPERATOR_IMAGE,
} from '../../harness/devcluster/image';
import { BUSYBOX_IMAGE } from '../../harness/devcluster/images';
import { CLUSTER_DNS_IP } from '../../harness/devcluster/network';
import { nodePaths } from '../../harness/devcluster/node';
import { defaultStateDir } from '../../harness/devcluster/paths';
import { kubectl, running } from '../helpers/pods';
import { eventually } from '../helpers/wait';

const kc = new KubeConfig();
kc.loadFromDefault();
const core = kc.makeApiClient(CoreV1Api);
const rbac = kc.makeApiClient(RbacAuthorizationV1Api);

const nodeName = process.env.DATAKEY_NODE ?? '';
const local = process.env.DATAKEY_LOCAL_CLUSTER === '1';
const mustHaveNode = local && process.env.CI === 'true';
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`;
const ns = `svc-${suffix}`;
/** What the web pod serves: proves the answer came from it. */
const page = `hello from ${suffix}`;

function busybox(name: string, command: string[], labels?: Record<string, string>): V1Pod {
  return {
    metadata: { name, labels },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'main', image: BUSYBOX_IMAGE, imagePullPolicy: 'Never', command }],
    },
  };
}

/** A shell command in the client pod; busybox's `wget -T` crashes, hence `timeout`. */
function inClient(script: string): Promise<string> {
  return kubectl(['exec', '-n', ns, 'client', '--', 'sh', '-c', script]);
}

async function waitRunning(name: string): Promise<V1Pod> {
  return eventually(`pod ${name} Running`, 90_000, async () => {
    const p = await core.readNamespacedPod({ namespace: ns, name });
    if (p.status?.phase === 'Failed') throw new Error(`pod ${name} failed`);
    return running(p) ? p : undefined;
  });
}

if (!nodeName) {
  if (mustHaveNode) {
    test('the local cluster has a Ready node for Services (CI=true)', () => {
      throw new Error('CI=true and the local cluster has no Ready node');
    });
  } else {
    test.skip('Services and cluster DNS on a real node (this cluster has no Ready node)', () =>
      undefined);
  }
} else {
  describe(`Services and cluster DNS on the node ${nodeName}`, () => {
    let clusterIP = '';

    beforeAll(async () => {
      await core.createNamespace({ body: { metadata: { name: ns } } });
      await eventually('the default service account', 60_000, async () =>
        core.readNamespacedServiceAccount({ namespace: ns, name: 'default' }),
      );
      const serve = `mkdir -p /www && echo "${page}" > /www/index.html && exec httpd -f -p 8080 -h /www`;
      await core.createNamespacedPod({
        namespace: ns,
        body: busybox('web', ['sh', '-c', serve], { app: 'web' }),
      });
      await core.createNamespacedPod({ namespace: ns, body: busybox('client', ['sleep', '3600']) });
      const svc = await core.createNamespacedService({
        namespace: ns,
        body: {
          metadata: { name: 'web' },
          spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] },
        },
      });
      clusterIP = svc.spec?.clusterIP ?? '';
      await waitRunning('web');
      await waitRunning('client');
    });

    afterAll(async () => {
      await core.deleteNamespace({ name: ns }).catch(() => undefined);
    });

    test('a pod reaches another pod through the ClusterIP', async () => {
      expect(clusterIP).toMatch(/^10\.0\.0\.\d+$/);
      const body = await eventually('the web pod through its ClusterIP', 30_000, async () => {
        const out = await inClient(`timeout 5 wget -qO- http://${clusterIP}/`);
        return out.includes(page) ? out : undefined;
      });
      expect(body.trim()).toBe(page);
    });

    test('the pod resolves the Service by name through the cluster DNS and reaches it', async () => {
      const resolv = await inClient('cat /etc/resolv.conf');
      expect(resolv).toContain(`nameserver ${CLUSTER_DNS_IP}`);
      expect(resolv).toMatch(
        new RegExp(
          `^search ${ns}\\.svc\\.cluster\\.local svc\\.cluster\\.local cluster\\.local`,
          'm',
        ),
      );

      const fqdn = `web.${ns}.svc.cluster.local`;
      // busybox's nslookup exits 1 when another search domain answered NXDOMAIN: read its output.
      const lookup = await eventually(`${fqdn} resolved`, 30_000, async () => {
        const out = await inClient(`nslookup ${fqdn} 2>&1; true`);
        return out.includes(`Address: ${clusterIP}`) ? out : undefined;
      });
      expect(lookup).toContain(fqdn);
      for (const url of [`http://${fqdn}/`, 'http://web/']) {
        const body = await eventually(`the web pod at ${url}`, 30_000, async () => {
          const out = await inClient(`timeout 5 wget -qO- ${url}`);
          return out.includes(page) ? out : undefined;
        });
        expect(body.trim()).toBe(page);
      }
    });

    (local ? test : test.skip)('the host reaches the ClusterIP', async () => {
      const res = await eventually('the web pod from the host', 30_000, async () => {
        const r = await httpGet(`http://${clusterIP}/`);
        return r.status === 200 ? r : undefined;
      });
      expect(res.body.trim()).toBe(page);
    });

    const imageReason = !local ? 'not the local cluster' : imageBuildUnsupported();
    (imageReason ? describe.skip : describe)(`in-cluster config (${OPERATOR_IMAGE})`, () => {
      beforeAll(async () => {
        await buildAndImport({ address: nodePaths(defaultStateDir()).containerdSock });
        await core.createNamespacedServiceAccount({
          namespace: ns,
          body: { metadata: { name: 'reader' } },
        });
        await rbac.createNamespacedRole({
          namespace: ns,
          body: {
            metadata: { name: 'pod-reader' },
            rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] }],
          },
        });
        await rbac.createNamespacedRoleBinding({
          namespace: ns,
          body: {
            metadata: { name: 'reader' },
            roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-reader' },
            subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: ns }],
          },
        });
      }, 900_000);

      test('a pod with a ServiceAccount gets 200 for what its Role allows and 403 for the rest', async () => {
        // Only what the pod is given: the mounted token and CA, the Service's name and env.
        const script = `
          const fs = require('fs'), https = require('https');
          const dir = '/var/run/secrets/kubernetes.io/serviceaccount';
          const token = fs.readFileSync(dir + '/token', 'utf8');
          const ca = fs.readFileSync(dir + '/ca.crt');
          const ns = fs.readFileSync(dir + '/namespace', 'utf8');
          const get = (url) => new Promise((resolve) => {
            const req = https.get(url, { ca, headers: { Authorization: 'Bearer ' + token }, timeout: 10000 },
              (res) => { res.resume(); resolve(res.statusCode); });
            req.on('timeout', () => req.destroy(new Error('timeout')));
            req.on('error', (e) => resolve(e.code || e.message));
          });
          const byName = 'https://kubernetes.default.svc/api/v1/namespaces/' + ns;
          const env = process.env;
          const byEnv = 'https://' + env.KUBERNETES_SERVICE_HOST + ':' + env.KUBERNETES_SERVICE_PORT;
          (async () => console.log(JSON.stringify({
            ns,
            allowed: await get(byName + '/pods'),
            forbidden: await get(byName + '/secrets'),
            allowedByEnv: await get(byEnv + '/api/v1/namespaces/' + ns + '/pods'),
          })))();`;
        await core.createNamespacedPod({
          namespace: ns,
          body: {
            metadata: { name: 'in-cluster' },
            spec: {
              serviceAccountName: 'reader',
              restartPolicy: 'Never',
              containers: [
                {
                  name: 'main',
                  image: OPERATOR_IMAGE,
                  imagePullPolicy: 'Never',
                  command: ['node', '-e', script],
                },
              ],
            },
          },
        });
        const phase = await eventually('the in-cluster pod finished', 120_000, async () => {
          const p = await core.readNamespacedPod({ namespace: ns, name: 'in-cluster' });
          const ph = p.status?.phase;
          return ph === 'Succeeded' || ph === 'Failed' ? ph : undefined;
        });
        const out = await core.readNamespacedPodLog({ namespace: ns, name: 'in-cluster' });
        expect({ phase, out: out.trim() }).toEqual({ phase: 'Succeeded', out: expect.any(String) });
        expect(JSON.parse(out.trim())).toEqual({
          ns,
          allowed: 200,
          forbidden: 403,
          allowedByEnv: 200,
        });
      });
    });
  });
}

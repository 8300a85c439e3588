// The root Dockerfile built here with buildah (npm run image:build), imported
// into the local node's containerd and run as real pods under a restricted
// securityContext: non-root, read-only root filesystem, no capabilities.
// The build is cached by a hash of its inputs, so unchanged sources reuse it.
import * as http from 'node:http';
import { CoreV1Api, KubeConfig, type V1Container, type V1Pod } from '@kubernetes/client-node';
import { buildAndImport, OPERATOR_IMAGE } from '../../harness/devcluster/image';
import { nodePaths } from '../../harness/devcluster/node';
import { defaultStateDir } from '../../harness/devcluster/paths';
import { NODE_NAME, onLocalNodeWithImage } from '../helpers/image-on-node';
import { eventually } from '../helpers/wait';

const kc = new KubeConfig();
kc.loadFromDefault();
const core = kc.makeApiClient(CoreV1Api);

const nodeName = NODE_NAME;
const suffix = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`;
const ns = `image-${suffix}`;

/** The restricted profile a chart will use: what the image must work under. */
function restricted(c: V1Container): V1Container {
  return {
    image: OPERATOR_IMAGE,
    imagePullPolicy: 'Never',
    ...c,
    securityContext: {
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    },
  };
}

function podSpec(
  name: string,
  c: Omit<V1Container, 'name'>,
  extra: Partial<V1Pod['spec']> = {},
): V1Pod {
  return {
    metadata: { name },
    spec: {
      nodeName,
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 30,
      securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [restricted({ ...c, name: 'main' })],
      ...extra,
    },
  };
}

async function finished(name: string): Promise<{ phase: string; exitCode?: number }> {
  return eventually(`pod ${name} finished`, 120_000, async () => {
    const p = await core.readNamespacedPod({ namespace: ns, name });
    const phase = p.status?.phase ?? '';
    if (phase !== 'Succeeded' && phase !== 'Failed') return undefined;
    return { phase, exitCode: p.status?.containerStatuses?.[0]?.state?.terminated?.exitCode };
  });
}

function logs(name: string): Promise<string> {
  return core.readNamespacedPodLog({ namespace: ns, name, container: 'main' });
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

onLocalNodeWithImage('the image builds and runs on the local node', () => {
  describe(`the image ${OPERATOR_IMAGE} on the node ${nodeName}`, () => {
    beforeAll(async () => {
      const img = await buildAndImport({ address: nodePaths(defaultStateDir()).containerdSock });
      process.stderr.write(
        `[image] ${img.built ? `built (base ${img.seconds.base}s, build ${img.seconds.build}s, export ${img.seconds.export}s)` : 'reused (inputs unchanged)'}, ` +
          `${(img.size / 1e6).toFixed(0)} MB, imported in ${img.importSeconds}s\n`,
      );
      await core.createNamespace({ body: { metadata: { name: ns } } });
      await eventually('the default service account', 60_000, async () =>
        core.readNamespacedServiceAccount({ namespace: ns, name: 'default' }),
      );
    }, 900_000);

    afterAll(async () => {
      await core.deleteNamespace({ name: ns }).catch(() => undefined);
    });

    test('no arguments: the CLI prints its usage and exits 0', async () => {
      await core.createNamespacedPod({ namespace: ns, body: podSpec('help', {}) });
      expect(await finished('help')).toEqual({ phase: 'Succeeded', exitCode: 0 });
      const out = await logs('help');
      expect(out).toContain('Usage: datakey <command>');
      expect(out).toMatch(/kms serve/);
      expect(out).toMatch(/operator/);
    });

    test('runs as uid 65532 without capabilities on a read-only root filesystem', async () => {
      const script = [
        "const fs = require('fs');",
        "const status = fs.readFileSync('/proc/self/status', 'utf8');",
        'let write = "written";',
        "try { fs.writeFileSync('/app/x', 'x'); } catch (e) { write = e.code; }",
        'let tmp = "written";',
        "try { fs.writeFileSync('/tmp/x', 'x'); } catch (e) { tmp = e.code; }",
        'console.log(JSON.stringify({ uid: process.getuid(), gid: process.getgid(),',
        '  capEff: /CapEff:\\s*(\\w+)/.exec(status)[1], write, tmp,',
        '  env: process.env.NODE_ENV, node: process.version }));',
      ].join('\n');
      await core.createNamespacedPod({
        namespace: ns,
        body: podSpec('whoami', { command: ['node', '-e', script] }),
      });
      expect(await finished('whoami')).toEqual({ phase: 'Succeeded', exitCode: 0 });
      const seen = JSON.parse((await logs('whoami')).trim()) as Record<string, unknown>;
      expect(seen).toEqual({
        uid: 65532,
        // containerd 1.6's CRI takes only the uid of the image's USER 65532:65532;
        // the group is 0 unless the pod sets runAsGroup (the files are root-owned, read-only).
        gid: expect.any(Number),
        capEff: '0000000000000000',
        write: 'EROFS',
        tmp: 'EROFS',
        env: 'production',
        node: expect.stringMatching(/^v20\./),
      });
    });

    test('kms serve on a memory emptyDir answers HTTP from the host and stops on SIGTERM', async () => {
      const started = Date.now();
      await core.createNamespacedPod({
        namespace: ns,
        body: podSpec(
          'kms',
          {
            args: ['kms', 'serve', '--listen', '0.0.0.0:8080', '--data-dir', '/data'],
            env: [
              { name: 'DATAKEY_ACCESS_KEY_ID', value: 'image-test' },
              { name: 'DATAKEY_ACCESS_KEY_SECRET', value: 'image-test-secret' },
            ],
            ports: [{ containerPort: 8080 }],
            volumeMounts: [{ name: 'data', mountPath: '/data' }],
          },
          { volumes: [{ name: 'data', emptyDir: { medium: 'Memory' } }] },
        ),
      });
      const ip = await eventually('the kms pod Running', 120_000, async () => {
        const p = await core.readNamespacedPod({ namespace: ns, name: 'kms' });
        if (p.status?.phase === 'Failed' || p.status?.phase === 'Succeeded') {
          throw new Error(`kms pod ended: ${await logs('kms').catch(() => '')}`);
        }
        return p.status?.phase === 'Running' ? p.status.podIP : undefined;
      });
      const res = await eventually('an HTTP answer', 60_000, async () =>
        get(`http://${ip}:8080/`).catch(() => undefined),
      );
      const answered = (Date.now() - started) / 1000;
      process.stderr.write(`[image] kms pod created → HTTP answer in ${answered.toFixed(1)}s\n`);
      // An unsigned request is refused by the KMS API, in its own error format.
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      expect(res.body).toMatch(/Code|code/);
      const out = await logs('kms');
      expect(out).toContain('kms api listening');
      expect(out).toContain('"dataDir":"/data"');

      // Grace period 30 s: a pod gone well before it stopped on SIGTERM (node is PID 1).
      const deleting = Date.now();
      await core.deleteNamespacedPod({ namespace: ns, name: 'kms' });
      await eventually('the kms pod gone', 60_000, async () => {
        try {
          await core.readNamespacedPod({ namespace: ns, name: 'kms' });
          return undefined;
        } catch {
          return true;
        }
      });
      const stopSeconds = (Date.now() - deleting) / 1000;
      process.stderr.write(`[image] kms pod deleted in ${stopSeconds.toFixed(1)}s\n`);
      expect(stopSeconds).toBeLessThan(15);
    });
  });
});

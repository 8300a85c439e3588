import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../../src/common/logger';
import type { Credentials } from '../../src/kms-api/server';
import { startOperator, type RunningOperator } from '../../src/operator/operator';
import { injectionOptions } from '../../src/injection/options';
import { up } from './cluster';
import { buildAndImport, OPERATOR_IMAGE } from './image';
import { BRIDGE_IP, nodePaths } from './node';

const run = promisify(execFile);

export interface DevOptions {
  /** Exit once the examples are Ready instead of running until Ctrl-C. */
  once: boolean;
  root: string;
  kmsListen: { host: string; port: number };
  /** Where the webhook and key delivery listen (0.0.0.0: pods reach it on the bridge). */
  webhookListen: { host: string; port: number };
}

export interface DevSession {
  operator: RunningOperator;
  kubeconfig: string;
}

/**
 * The product's main job on its embedded defaults: the local control plane, the
 * CRDs, the operator (with the KMS API on loopback), the examples applied and
 * Ready, and what they produced printed: the Secret holds only ciphertext.
 */
export async function runDev(options: DevOptions): Promise<DevSession> {
  const say = (line: string) => process.stdout.write(`${line}\n`);
  const cluster = await up();
  const kubectl = async (...args: string[]) =>
    (
      await run(cluster.binaries.kubectl, args, {
        env: { ...process.env, KUBECONFIG: cluster.kubeconfig },
      })
    ).stdout;

  say('installing the CRDs');
  await kubectl('apply', '-f', path.join(options.root, 'crds'));
  await kubectl('wait', '--for=condition=Established', 'crd', '--all', '--timeout=60s');

  const injecting = Boolean(cluster.node);
  if (injecting) {
    say(`building the operator image ${OPERATOR_IMAGE} for the injected agent (cached)`);
    await buildAndImport({ address: nodePaths(cluster.stateDir).containerdSock });
  }
  const credentials = devCredentials(path.join(options.root, '.datakey-dev'));
  const operator = await startOperator({
    injection: injecting ? devInjection(options.webhookListen) : undefined,
    kubeconfig: cluster.kubeconfig,
    namespace: 'datakey-system',
    metricsHost: '127.0.0.1',
    metricsPort: 0,
    kmsListen: { ...options.kmsListen, credentials: credentials.values },
    identity: 'datakey-dev',
    logger: createLogger('operator', { level: options.once ? 'warn' : 'info' }),
  });

  say('applying examples/');
  say((await kubectl('apply', '-f', path.join(options.root, 'examples'))).trimEnd());
  await kubectl('wait', '--for=condition=Ready', 'masterkeys', '--all', '--timeout=120s');
  await kubectl(
    'wait',
    '--for=condition=Ready',
    'datakeys',
    '--all',
    '--all-namespaces',
    '--timeout=120s',
  );

  if (injecting) await showInjectedPod(kubectl, options.root, say);
  else say(`no injected pod: ${cluster.noNodeReason ?? 'the cluster has no node'}`);

  say('\n$ kubectl get masterkeys,datakeys -A');
  say((await kubectl('get', 'masterkeys,datakeys', '-A')).trimEnd());
  say('\n$ kubectl get secret -n shop orders -o yaml   # ciphertext only, never a plaintext key');
  say((await kubectl('get', 'secret', '-n', 'shop', 'orders', '-o', 'yaml')).trimEnd());
  say(
    `\nKMS API (Alibaba KMS 2016-01-20) at http://${options.kmsListen.host}:${options.kmsListen.port}; ` +
      `credentials in ${credentials.file}`,
  );
  say(`KUBECONFIG=${cluster.kubeconfig}`);
  say(
    options.once
      ? 'All Ready. The control plane keeps running (npm run cluster:down stops it).'
      : 'Running; Ctrl-C stops the operator (npm run cluster:down stops the control plane).',
  );
  return { operator, kubeconfig: cluster.kubeconfig };
}

/** Outside a cluster: the API server calls loopback, pods call the bridge's address. */
function devInjection(listen: { host: string; port: number }) {
  return injectionOptions(
    {
      // Not the chart's name: a chart installed into this cluster keeps its own.
      'webhook-configuration': 'datakey-operator-dev',
      'webhook-url': `https://127.0.0.1:${listen.port}`,
      'delivery-url': `https://${BRIDGE_IP}:${listen.port}`,
      'agent-image': OPERATOR_IMAGE,
    },
    listen,
    'datakey-system',
  );
}

/** The example workload: a pod that got the `orders` key in its memory volume. */
async function showInjectedPod(
  kubectl: (...args: string[]) => Promise<string>,
  root: string,
  say: (line: string) => void,
): Promise<void> {
  say('applying examples/workload/ (a Deployment annotated kms.datakey.io/inject: orders)');
  say((await kubectl('apply', '-f', path.join(root, 'examples', 'workload'))).trimEnd());
  await kubectl('rollout', 'status', '-n', 'shop', 'deployment/orders-reader', '--timeout=180s');
  say('\n$ kubectl logs -n shop deployment/orders-reader -c datakey-agent');
  say(
    (
      await kubectl('logs', '-n', 'shop', 'deployment/orders-reader', '-c', 'datakey-agent')
    ).trimEnd(),
  );
  say(
    '$ kubectl logs -n shop deployment/orders-reader -c app   # the key is in memory, never printed',
  );
  say((await kubectl('logs', '-n', 'shop', 'deployment/orders-reader', '-c', 'app')).trimEnd());
}

/** A development credential, generated once and kept mode 0600 beside the dev state. */
export function devCredentials(dir: string): { file: string; values: Credentials } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, 'credentials.env');
  if (!existsSync(file)) {
    const id = `dev-${randomBytes(6).toString('hex')}`;
    const secret = randomBytes(24).toString('base64url');
    writeFileSync(file, `DATAKEY_ACCESS_KEY_ID=${id}\nDATAKEY_ACCESS_KEY_SECRET=${secret}\n`, {
      mode: 0o600,
    });
  }
  const entries = readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.includes('='))
    .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]);
  const env = Object.fromEntries(entries) as Record<string, string>;
  return {
    file,
    values: {
      accessKeyId: env.DATAKEY_ACCESS_KEY_ID,
      accessKeySecret: env.DATAKEY_ACCESS_KEY_SECRET,
    },
  };
}

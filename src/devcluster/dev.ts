import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createLogger } from '../common/logger';
import type { Credentials } from '../kms-api/server';
import { startOperator, type RunningOperator } from '../operator/operator';
import { up } from './cluster';

const run = promisify(execFile);

export interface DevOptions {
  /** Exit once the examples are Ready instead of running until Ctrl-C. */
  once: boolean;
  root: string;
  kmsListen: { host: string; port: number };
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

  const credentials = devCredentials(path.join(options.root, '.datakey-dev'));
  const operator = await startOperator({
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

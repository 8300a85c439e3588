import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { CLI, makeTempDir, trackChild, type Exit } from './kms-process';
import { freePort, httpGet } from '../../src/common/wait';

/**
 * Runs `node dist/cli.js operator` as a child process against the test cluster.
 * Every line it writes (stdout and stderr) is kept in `lines`, in the per-file
 * `allOperatorLines` (for the leak scan) and in a log file. The process is
 * registered with the teardown of kms-process.ts, so it never outlives its
 * test file.
 */

const START_TIMEOUT_MS = 30_000;

/** Every line written by every operator process started by this test file. */
export const allOperatorLines: string[] = [];

export interface OperatorProcess {
  pid: number;
  namespace: string;
  metricsUrl: string;
  /** KMS API URL when started with `kms: true`. */
  kmsUrl?: string;
  accessKeyId: string;
  accessKeySecret: string;
  logFile: string;
  lines: string[];
  alive(): boolean;
  exited: Promise<Exit>;
  /** SIGTERM and wait (SIGKILL after 10 s). */
  stop(): Promise<Exit>;
  kill9(): Promise<Exit>;
  /** The text of /metrics. */
  metrics(): Promise<string>;
  /** The value of `datakey_leader` (0 or 1). */
  leader(): Promise<number>;
  /** /readyz: 200 `ok`, or 503 `not ready: <why>`. */
  readyz(): Promise<{ status: number; body: string }>;
}

export interface OperatorStartOptions {
  /** The operator's own namespace (key store, root key, lease). */
  namespace: string;
  /** Also serve the KMS API (--kms-listen) with a generated credential. */
  kms?: boolean;
  accessKeyId?: string;
  accessKeySecret?: string;
  args?: string[];
  /** Credentials of the operator; default: KUBECONFIG (the cluster's admin). */
  kubeconfig?: string;
  /** Where to append the log lines; default: a new temp file. */
  logFile?: string;
  /** The log message that means it started (default `operator started`). */
  startedMessage?: string;
  /** More environment variables (e.g. RRSA's, NODE_EXTRA_CA_CERTS). */
  env?: NodeJS.ProcessEnv;
}

/** Starts the operator and waits for its "operator started" line (or `startedMessage`). */
export async function startOperatorProcess(
  options: OperatorStartOptions,
): Promise<OperatorProcess> {
  const accessKeyId = options.accessKeyId ?? `op-ak-${randomBytes(4).toString('hex')}`;
  const accessKeySecret = options.accessKeySecret ?? randomBytes(18).toString('base64url');
  const metricsPort = await freePort();
  const kmsPort = options.kms ? await freePort() : undefined;
  // DATAKEY_TEST_LOG_DIR keeps the logs after the run (for debugging a failure).
  const logDir = process.env.DATAKEY_TEST_LOG_DIR
    ? (mkdirSync(process.env.DATAKEY_TEST_LOG_DIR, { recursive: true }),
      process.env.DATAKEY_TEST_LOG_DIR)
    : makeTempDir('datakey-operator-log-');
  const logFile = options.logFile ?? path.join(logDir, `operator-${options.namespace}.log`);
  const args = [
    CLI,
    'operator',
    '--kubeconfig',
    options.kubeconfig ?? (process.env.KUBECONFIG as string),
    '--namespace',
    options.namespace,
    '--metrics-listen',
    `127.0.0.1:${metricsPort}`,
    ...(kmsPort ? ['--kms-listen', `127.0.0.1:${kmsPort}`] : []),
    // Pod injection only where a test asks for it: it binds a port and registers a webhook.
    ...(options.args?.includes('--webhook-listen') ? [] : ['--webhook-listen', 'none']),
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    env: {
      ...process.env,
      DATAKEY_ACCESS_KEY_ID: accessKeyId,
      DATAKEY_ACCESS_KEY_SECRET: accessKeySecret,
      ALIBABA_CLOUD_ECS_METADATA_DISABLED: 'true',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tracked = trackChild(child);
  const lines: string[] = [];
  const keep = (line: string) => {
    lines.push(line);
    allOperatorLines.push(line);
    appendFileSync(logFile, `${child.pid} ${line}\n`);
  };
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', keep);
  const stdout = createInterface({ input: child.stdout as NodeJS.ReadableStream });

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`operator did not start in ${START_TIMEOUT_MS} ms:\n${lines.join('\n')}`));
    }, START_TIMEOUT_MS);
    stdout.on('line', (line) => {
      keep(line);
      if (line.includes(`"msg":"${options.startedMessage ?? 'operator started'}"`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void tracked.exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`operator exited early (${JSON.stringify(e)}):\n${lines.join('\n')}`));
    });
  });

  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const metrics = async () => {
    const r = await httpGet(`${metricsUrl}/metrics`);
    if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
    return r.body;
  };
  return {
    pid: child.pid as number,
    namespace: options.namespace,
    metricsUrl,
    kmsUrl: kmsPort ? `http://127.0.0.1:${kmsPort}` : undefined,
    accessKeyId,
    accessKeySecret,
    logFile,
    lines,
    alive: () => child.exitCode === null && child.signalCode === null,
    exited: tracked.exited,
    stop: () => tracked.stop('SIGTERM'),
    kill9: tracked.kill9,
    metrics,
    readyz: () => httpGet(`${metricsUrl}/readyz`),
    async leader() {
      const match = /^datakey_leader (\S+)$/m.exec(await metrics());
      if (!match) throw new Error('datakey_leader missing from /metrics');
      return Number(match[1]);
    },
  };
}

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

/**
 * Runs `node dist/cli.js kms serve` as a child process for black-box tests.
 * Every process and temp dir made here is registered and torn down in an
 * `afterAll` of the test file that imports this module (and on process exit),
 * so a failing test never leaves a server or a data dir behind.
 */

export const CLI = path.resolve(__dirname, '../../dist/cli.js');
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface KmsProcess {
  url: string;
  /** With --instance-listen: the Instance API's https URL. */
  instanceUrl?: string;
  port: number;
  dataDir: string;
  accessKeyId: string;
  accessKeySecret: string;
  pid: number;
  /** Every stdout line so far (pino JSON lines). */
  stdoutLines: string[];
  stderr(): string;
  alive(): boolean;
  /** Resolves when the process has exited. */
  exited: Promise<Exit>;
  /** Sends `signal` (default SIGTERM) and waits for the exit (SIGKILL after 10 s). */
  stop(signal?: NodeJS.Signals): Promise<Exit>;
  kill9(): Promise<Exit>;
}

export interface StartOptions {
  accessKeyId?: string;
  accessKeySecret?: string;
  /** Reuse a data dir (e.g. across a restart); default: a fresh temp dir. */
  dataDir?: string;
  /** HOST:PORT to listen on (e.g. the same port again after a restart); default 127.0.0.1:0. */
  listen?: string;
  /** Extra `kms serve` arguments, e.g. ['--rate-limit', '2']. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
}

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

/** A temp dir removed when the test file ends. */
export function makeTempDir(prefix = 'datakey-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal: signal as NodeJS.Signals })),
  );
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<Exit> {
  const exited = exitOf(child);
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  try {
    return await exited;
  } finally {
    clearTimeout(timer);
    children.delete(child);
  }
}

/**
 * Registers a child process started elsewhere (e.g. the operator helper) for the
 * same teardown, and gives it the same exit/stop/kill9 handling.
 */
export function trackChild(child: ChildProcess): {
  exited: Promise<Exit>;
  stop(signal?: NodeJS.Signals): Promise<Exit>;
  kill9(): Promise<Exit>;
} {
  children.add(child);
  const exited = exitOf(child);
  exited.then(() => children.delete(child));
  return {
    exited,
    stop: (signal = 'SIGTERM') => stopChild(child, signal),
    kill9: () => stopChild(child, 'SIGKILL'),
  };
}

export async function cleanupAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c, 'SIGKILL')));
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

if (typeof afterAll === 'function') afterAll(cleanupAll);
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** Starts a server on 127.0.0.1:0 and waits for its "kms api listening" line. */
export async function startKms(options: StartOptions = {}): Promise<KmsProcess> {
  const accessKeyId = options.accessKeyId ?? `test-ak-${randomBytes(4).toString('hex')}`;
  const accessKeySecret = options.accessKeySecret ?? randomBytes(18).toString('base64url');
  const dataDir = options.dataDir ?? makeTempDir('datakey-kms-');
  const child = spawn(
    process.execPath,
    [
      CLI,
      'kms',
      'serve',
      '--listen',
      options.listen ?? '127.0.0.1:0',
      '--data-dir',
      dataDir,
      ...(options.args ?? []),
    ],
    {
      env: {
        ...process.env,
        DATAKEY_ACCESS_KEY_ID: accessKeyId,
        DATAKEY_ACCESS_KEY_SECRET: accessKeySecret,
        ...options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.add(child);
  const exited = exitOf(child);
  exited.then(() => children.delete(child));
  const stdoutLines: string[] = [];
  let stderr = '';
  let instanceUrl: string | undefined;
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });

  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kms serve did not start in ${START_TIMEOUT_MS} ms; stderr: ${stderr}`));
    }, START_TIMEOUT_MS);
    lines.on('line', (line) => {
      stdoutLines.push(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string };
        if (entry.msg === 'kms instance api listening') instanceUrl = entry.url;
        if (entry.msg === 'kms api listening' && entry.url) {
          clearTimeout(timer);
          resolve(entry.url);
        }
      } catch {
        // not a JSON line: kept in stdoutLines only
      }
    });
    exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`kms serve exited early (${JSON.stringify(e)}); stderr: ${stderr}`));
    });
  });

  return {
    url,
    instanceUrl,
    port: Number(new URL(url).port),
    dataDir,
    accessKeyId,
    accessKeySecret,
    pid: child.pid as number,
    stdoutLines,
    stderr: () => stderr,
    alive: () => child.exitCode === null && child.signalCode === null,
    exited,
    stop: (signal = 'SIGTERM') => stopChild(child, signal),
    kill9: () => stopChild(child, 'SIGKILL'),
  };
}

/** A self-signed certificate for an IP address (what `kms serve --tls-cert/--tls-key` takes). */
export function addressCertificate(dir: string, ip = '127.0.0.1'): { cert: string; key: string } {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      `/CN=${ip}`,
      '-addext',
      `subjectAltName=IP:${ip}`,
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

export interface CliResult extends Exit {
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (killed after `timeoutMs`), with exactly `env`. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 10_000,
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

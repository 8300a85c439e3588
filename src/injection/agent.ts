import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { sleep } from '../common/wait';
import { parseDuration } from '../common/duration';
import { DELIVER_PATH, REPORT_PATH } from './endpoints';
import { requestedKeys } from './pod-patch';

/**
 * `datakey agent`, the init container of an injected pod: proves the pod's
 * identity with its projected token, fetches every named key in one request
 * and writes them, mode 0400, only into a tmpfs. Nothing is written unless all
 * keys arrived; key material is never printed.
 */

interface AgentOptions {
  url: string;
  keys: string[];
  dir: string;
  tokenFile: string;
  timeoutMs: number;
  ca: string;
  podName?: string;
  podUid?: string;
}

class AgentError extends Error {}
/** A failure the operator cannot see (the pod's own filesystem): reported so it becomes an Event. */
class LocalFailure extends AgentError {}

const say = (line: string) => process.stderr.write(`datakey agent: ${line}\n`);

function options(args: string[], env: NodeJS.ProcessEnv): AgentOptions {
  const { values } = parseArgs({
    args,
    options: {
      url: { type: 'string' },
      keys: { type: 'string' },
      dir: { type: 'string' },
      'token-file': { type: 'string' },
      timeout: { type: 'string' },
    },
    strict: true,
  });
  for (const flag of ['url', 'keys', 'dir', 'token-file'] as const) {
    if (!values[flag]) throw new AgentError(`--${flag} is required`);
  }
  if (!env.DATAKEY_AGENT_CA) {
    throw new AgentError('DATAKEY_AGENT_CA (the PEM CA of the delivery endpoint) is not set');
  }
  const timeoutSeconds = parseDuration(values.timeout ?? '2m', {
    minSeconds: 1,
    maxSeconds: 365 * 86400,
  });
  if (timeoutSeconds === undefined) {
    throw new AgentError('--timeout must be an integer followed by d, h, m or s');
  }
  return {
    url: values.url as string,
    keys: requestedKeys(values.keys as string),
    dir: path.resolve(values.dir as string),
    tokenFile: values['token-file'] as string,
    timeoutMs: timeoutSeconds * 1000,
    ca: env.DATAKEY_AGENT_CA,
    podName: env.DATAKEY_POD_NAME || undefined,
    podUid: env.DATAKEY_POD_UID || undefined,
  };
}

const unescapeMount = (s: string) =>
  s.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));

/** The mount that holds `dir` (the longest mount point above it), from /proc/mounts text. */
export function mountOf(dir: string, procMounts: string): { mountPoint: string; fsType: string } {
  let best = { mountPoint: '', fsType: '' };
  for (const line of procMounts.split('\n')) {
    const [, rawPoint, fsType] = line.split(' ');
    if (!rawPoint || !fsType) continue;
    const mountPoint = unescapeMount(rawPoint);
    const holds = mountPoint === '/' || dir === mountPoint || dir.startsWith(`${mountPoint}/`);
    // Later lines win on equal length: they are mounted over the earlier ones.
    if (holds && mountPoint.length >= best.mountPoint.length) best = { mountPoint, fsType };
  }
  return best;
}

function checkTmpfs(dir: string): void {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch {
    throw new LocalFailure(`refusing to write keys: ${dir} does not exist`);
  }
  const mount = mountOf(real, fs.readFileSync('/proc/mounts', 'utf8'));
  if (mount.fsType !== 'tmpfs') {
    throw new LocalFailure(
      `refusing to write keys: ${dir} is on ${mount.fsType || 'an unknown filesystem'} (${mount.mountPoint}), not a tmpfs memory volume`,
    );
  }
}

function post(
  o: AgentOptions,
  token: string,
  pathname: string,
  body: unknown,
): Promise<{ status: number; body: Record<string, unknown>; retryAfterMs?: number }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(pathname, o.url),
      {
        method: 'POST',
        ca: o.ca,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
        },
        timeout: 15_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          let parsed: Record<string, unknown> = {};
          try {
            parsed = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
          } catch {
            parsed = { message: `unexpected answer (HTTP ${res.statusCode})` };
          }
          raw.fill(0);
          resolve({
            status: res.statusCode ?? 0,
            body: parsed,
            retryAfterMs: retryAfterMs(res.headers['retry-after']),
          });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

const RETRYABLE = new Set([409, 429, 502, 503, 504]);
const MAX_DELAY_MS = 10_000;

/** Retry-After in seconds (the delivery endpoint's form), capped like the backoff. */
function retryAfterMs(header: string | undefined): number | undefined {
  if (!header || !/^\d{1,4}$/.test(header)) return undefined;
  return Math.min(Number(header) * 1000, 60_000);
}

/** Asks until the keys come, a definitive refusal comes, or the time is up. */
async function fetchKeys(o: AgentOptions, token: string): Promise<Map<string, Buffer>> {
  const deadline = Date.now() + o.timeoutMs;
  let delayMs = 1000;
  for (;;) {
    let why: string;
    let waitMs = delayMs;
    try {
      const answer = await post(o, token, DELIVER_PATH, {
        keys: o.keys,
        podName: o.podName,
        podUid: o.podUid,
      });
      if (answer.status === 200) return keysOf(answer.body, o.keys);
      why = String(answer.body.message ?? `HTTP ${answer.status}`);
      if (!RETRYABLE.has(answer.status)) throw new AgentError(why);
      // The server says when to come back (429): not sooner than that.
      waitMs = Math.max(delayMs, answer.retryAfterMs ?? 0);
    } catch (err) {
      if (err instanceof AgentError) throw err;
      why = `cannot reach ${o.url}: ${(err as Error).message}`;
    }
    if (Date.now() + waitMs > deadline) {
      throw new AgentError(`gave up after ${o.timeoutMs / 1000} s: ${why}`);
    }
    say(`waiting: ${why}; next try in ${waitMs / 1000} s`);
    await sleep(waitMs);
    delayMs = Math.min(delayMs * 2, MAX_DELAY_MS);
  }
}

function keysOf(body: Record<string, unknown>, wanted: string[]): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const entry of (body.keys ?? []) as { name?: unknown; plaintext?: unknown }[]) {
    if (typeof entry.name === 'string' && typeof entry.plaintext === 'string') {
      keys.set(entry.name, Buffer.from(entry.plaintext, 'base64'));
    }
  }
  const missing = wanted.filter((k) => !keys.get(k)?.length);
  if (missing.length > 0) {
    for (const b of keys.values()) b.fill(0);
    throw new AgentError(`the answer lacks DataKeys ${missing.join(', ')}`);
  }
  return keys;
}

/** Writes every key or none: a temporary file per key, renamed into place, removed on failure. */
function writeKeys(dir: string, keys: Map<string, Buffer>): void {
  const written: string[] = [];
  try {
    for (const [name, plaintext] of keys) {
      const target = path.join(dir, name);
      const temporary = path.join(dir, `.${name}.tmp`);
      fs.rmSync(temporary, { force: true });
      fs.writeFileSync(temporary, plaintext, { mode: 0o400, flag: 'wx' });
      written.push(temporary);
      fs.renameSync(temporary, target);
      written.push(target);
    }
  } catch (err) {
    for (const file of written) fs.rmSync(file, { force: true });
    throw new LocalFailure(`could not write the keys into ${dir}: ${(err as Error).message}`);
  }
}

async function report(o: AgentOptions, token: string, message: string): Promise<void> {
  try {
    await post(o, token, REPORT_PATH, { message: `datakey agent: ${message}`.slice(0, 1024) });
  } catch {
    // Best effort: the message is in the container's log anyway.
  }
}

/** Runs the agent; the exit code is 0 only when every key was written. */
export async function runAgent(args: string[], env = process.env): Promise<number> {
  let o: AgentOptions;
  try {
    o = options(args, env);
  } catch (err) {
    say((err as Error).message);
    return 2;
  }
  let token = '';
  try {
    token = fs.readFileSync(o.tokenFile, 'utf8').trim();
    if (!token) throw new AgentError(`the token file ${o.tokenFile} is empty`);
    checkTmpfs(o.dir);
    const keys = await fetchKeys(o, token);
    try {
      writeKeys(o.dir, keys);
    } finally {
      for (const b of keys.values()) b.fill(0);
    }
    say(`wrote ${keys.size} key(s) (${o.keys.join(', ')}) to ${o.dir}`);
    return 0;
  } catch (err) {
    const message = err instanceof AgentError ? err.message : `failed: ${(err as Error).message}`;
    say(message);
    if (token && err instanceof LocalFailure) await report(o, token, message);
    return 1;
  }
}

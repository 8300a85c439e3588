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
 * identity with its projected token, fetches every named key (every kept
 * generation) in one request and writes them, mode 0400, only into a tmpfs.
 * Nothing is written unless all keys arrived; key material is never printed.
 *
 * With `--refresh-interval` it is a native sidecar: after the first write it
 * asks again on that interval (its token re-read each time) and keeps the files
 * current, each change an atomic rename.
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
  /** Sidecar mode: ask again this often; undefined for the one-shot init container. */
  refreshMs?: number;
}

/** One DataKey as delivered: every kept generation's plaintext, and which is current. */
export interface KeyGenerations {
  generation: number;
  generations: Map<number, Buffer>;
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
      'refresh-interval': { type: 'string' },
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
  const refreshSeconds =
    values['refresh-interval'] === undefined
      ? undefined
      : parseDuration(values['refresh-interval'], { minSeconds: 1, maxSeconds: 86400 });
  if (values['refresh-interval'] !== undefined && refreshSeconds === undefined) {
    throw new AgentError(
      '--refresh-interval must be an integer followed by d, h, m or s, from 1s to 1d',
    );
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
    refreshMs: refreshSeconds === undefined ? undefined : refreshSeconds * 1000,
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
): Promise<{ status: number; body: Record<string, unknown>; retryAfter?: string }> {
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
          const retryAfter = res.headers['retry-after'];
          resolve({ status: res.statusCode ?? 0, body: parsed, retryAfter });
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

/** A Retry-After header (seconds, or an HTTP date) in milliseconds; undefined when absent or malformed. */
export function retryAfterMs(header: string | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  if (/^\d{1,6}$/.test(header.trim())) return Number(header.trim()) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/**
 * Asks until the keys come, a definitive refusal comes, or the time is up: the
 * one fetch of both the init container and the sidecar's refresh. A 429 or 503
 * with Retry-After is waited out as the endpoint asks.
 */
async function fetchKeys(o: AgentOptions, token: string): Promise<Map<string, KeyGenerations>> {
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
      waitMs = Math.max(delayMs, retryAfterMs(answer.retryAfter) ?? 0);
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

/** The answer's keys; an older operator's answer (no generations) reads as generation 1. */
function keysOf(body: Record<string, unknown>, wanted: string[]): Map<string, KeyGenerations> {
  const keys = new Map<string, KeyGenerations>();
  const entries = (body.keys ?? []) as {
    name?: unknown;
    plaintext?: unknown;
    generation?: unknown;
    generations?: { generation?: unknown; plaintext?: unknown }[];
  }[];
  for (const entry of entries) {
    if (typeof entry.name !== 'string' || typeof entry.plaintext !== 'string') continue;
    const generation = Number.isSafeInteger(entry.generation) ? (entry.generation as number) : 1;
    const generations = new Map<number, Buffer>();
    for (const g of Array.isArray(entry.generations) ? entry.generations : []) {
      if (Number.isSafeInteger(g.generation) && typeof g.plaintext === 'string') {
        generations.set(g.generation as number, Buffer.from(g.plaintext, 'base64'));
      }
    }
    if (!generations.has(generation)) {
      generations.set(generation, Buffer.from(entry.plaintext, 'base64'));
    }
    keys.set(entry.name, { generation, generations });
  }
  const missing = wanted.filter((k) => !keys.get(k)?.generations.size);
  if (missing.length > 0) {
    zero(keys);
    throw new AgentError(`the answer lacks DataKeys ${missing.join(', ')}`);
  }
  return keys;
}

function zero(keys: Map<string, KeyGenerations>): void {
  for (const k of keys.values()) for (const b of k.generations.values()) b.fill(0);
}

/** Writes `content` to `target` through a temporary file beside it and one rename. */
function writeAtomically(target: string, content: Buffer | string, created: string[]): void {
  const temporary = path.join(path.dirname(target), `.${path.basename(target)}.tmp`);
  fs.rmSync(temporary, { force: true });
  fs.writeFileSync(temporary, content, { mode: 0o400, flag: 'wx' });
  created.push(temporary);
  fs.renameSync(temporary, target);
  created.push(target);
}

/** The files of one key: `<name>`, `<name>.generation`, `<name>.generations/<n>`. */
export const keyFiles = (dir: string, name: string) => ({
  current: path.join(dir, name),
  generation: path.join(dir, `${name}.generation`),
  generations: path.join(dir, `${name}.generations`),
});

/**
 * Brings the files in line with the keys: new generations' files first, then
 * `<name>` and `<name>.generation` (an app watching the number finds the files
 * in place), then dropped generations removed. A generation's content never
 * changes, so an existing file is kept; each write is an atomic rename. On
 * failure the files this call created are removed: the first write is all or
 * nothing, a failed refresh leaves the previous files.
 */
export function syncKeyFiles(dir: string, keys: Map<string, KeyGenerations>): boolean {
  const created: string[] = [];
  let changed = false;
  try {
    for (const [name, key] of keys) {
      const files = keyFiles(dir, name);
      fs.mkdirSync(files.generations, { recursive: true, mode: 0o700 });
      for (const [n, plaintext] of key.generations) {
        const file = path.join(files.generations, String(n));
        if (fs.existsSync(file)) continue;
        writeAtomically(file, plaintext, created);
        changed = true;
      }
      if (readNumber(files.generation) !== key.generation) {
        writeAtomically(files.current, key.generations.get(key.generation) as Buffer, created);
        writeAtomically(files.generation, String(key.generation), created);
        changed = true;
      }
    }
  } catch (err) {
    for (const file of created) fs.rmSync(file, { force: true });
    throw new LocalFailure(`could not write the keys into ${dir}: ${(err as Error).message}`);
  }
  for (const [name, key] of keys) {
    const folder = keyFiles(dir, name).generations;
    for (const entry of fs.readdirSync(folder)) {
      if (!key.generations.has(Number(entry)) || String(Number(entry)) !== entry) {
        fs.rmSync(path.join(folder, entry), { force: true });
        changed = true;
      }
    }
  }
  return changed;
}

function readNumber(file: string): number | undefined {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim());
  } catch {
    return undefined;
  }
}

async function report(o: AgentOptions, token: string, message: string): Promise<void> {
  try {
    await post(o, token, REPORT_PATH, { message: `datakey agent: ${message}`.slice(0, 1024) });
  } catch {
    // Best effort: the message is in the container's log anyway.
  }
}

function readToken(o: AgentOptions): string {
  const token = fs.readFileSync(o.tokenFile, 'utf8').trim();
  if (!token) throw new AgentError(`the token file ${o.tokenFile} is empty`);
  return token;
}

/** Fetches and writes every key once; the plaintexts are zeroed whatever happens. */
async function fetchAndWrite(o: AgentOptions, token: string): Promise<boolean> {
  const keys = await fetchKeys(o, token);
  try {
    return syncKeyFiles(o.dir, keys);
  } finally {
    zero(keys);
  }
}

/**
 * Sidecar mode, after the first write: asks again every interval with the
 * token re-read from the projected volume (the kubelet renews it), forever. A
 * failed round leaves the files as they were and is reported; the next round
 * tries again. SIGTERM (the pod's app is done) ends it with 0.
 */
async function refreshForever(o: AgentOptions, refreshMs: number): Promise<never> {
  process.once('SIGTERM', () => process.exit(0));
  for (;;) {
    await sleep(refreshMs);
    let token = '';
    try {
      token = readToken(o);
      if (await fetchAndWrite(o, token)) say(`refreshed the keys in ${o.dir}`);
    } catch (err) {
      const message = err instanceof AgentError ? err.message : `failed: ${(err as Error).message}`;
      say(`refresh: ${message}`);
      if (token && err instanceof LocalFailure) await report(o, token, message);
    }
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
    token = readToken(o);
    checkTmpfs(o.dir);
    await fetchAndWrite(o, token);
    say(`wrote ${o.keys.length} key(s) (${o.keys.join(', ')}) to ${o.dir}`);
  } catch (err) {
    const message = err instanceof AgentError ? err.message : `failed: ${(err as Error).message}`;
    say(message);
    if (token && err instanceof LocalFailure) await report(o, token, message);
    return 1;
  }
  if (o.refreshMs !== undefined) await refreshForever(o, o.refreshMs);
  return 0;
}

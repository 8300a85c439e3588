import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { cacheRoot } from '../../harness/devcluster/paths';
import { makeTempDir } from './kms-process';
import { sleep } from './wait';

/**
 * The official KMS instance SDKs as test clients, each driven by one runner
 * process (tools/instance-sdk-tests/<sdk>/) that runs every case and prints one
 * JSON object. Builds are cached outside the work tree, keyed by the hash of
 * the runner's sources and pinned dependencies:
 * `<cache>/instance-sdk/go-<hash>/runner`, `<cache>/instance-sdk/python-<hash>/` (a venv),
 * `<cache>/instance-sdk/java-<hash>/` (the Maven project, built there; the Maven
 * repository in `<cache>/instance-sdk/m2`).
 */

const run = promisify(execFile);
const TOOLS = path.resolve(__dirname, '../../tools/instance-sdk-tests');
export type Sdk = 'go' | 'python' | 'java';

export type CaseResult = Record<string, unknown> & {
  ok: boolean;
  code?: string;
  message?: string;
  httpCode?: number;
};
export type Results = Record<string, CaseResult>;

function keyOf(files: string[]): string {
  const hash = createHash('sha256');
  for (const file of files) hash.update(file).update(readFileSync(file));
  return hash.digest('hex').slice(0, 16);
}

const LOCK_STALE_MS = 20 * 60_000;

/**
 * Builds into a temp folder beside the target and renames it: a killed build
 * leaves nothing. A lock folder makes concurrent test files (the unit and the
 * cluster projects run together) wait for one build instead of racing, which
 * matters for Maven's shared local repository.
 */
async function cached(target: string, build: (dir: string) => Promise<void>): Promise<string> {
  if (existsSync(target)) return target;
  mkdirSync(path.dirname(target), { recursive: true });
  const lock = `${target}.lock`;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (Date.now() - statSync(lock).mtimeMs > LOCK_STALE_MS)
        rmSync(lock, { recursive: true, force: true });
      await sleep(1000);
      if (existsSync(target)) return target;
    }
  }
  try {
    if (existsSync(target)) return target;
    const partial = `${target}.partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    await build(partial);
    renameSync(partial, target);
    return target;
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

async function goRunner(): Promise<string[]> {
  const source = path.join(TOOLS, 'go');
  const files = ['go.mod', 'go.sum', 'main.go'].map((f) => path.join(source, f));
  const dir = await cached(
    path.join(cacheRoot(), 'instance-sdk', `go-${keyOf(files)}`),
    async (out) => {
      mkdirSync(out, { recursive: true });
      await run('go', ['build', '-o', path.join(out, 'runner'), '.'], {
        cwd: source,
        env: { ...process.env, CGO_ENABLED: '0' },
        maxBuffer: 16 * 1024 * 1024,
      });
    },
  );
  return [path.join(dir, 'runner')];
}

async function pythonRunner(): Promise<string[]> {
  const source = path.join(TOOLS, 'python');
  const requirements = path.join(source, 'requirements.txt');
  const dir = await cached(
    path.join(cacheRoot(), 'instance-sdk', `python-${keyOf([requirements])}`),
    async (out) => {
      await run('python3', ['-m', 'venv', out]);
      await run(
        path.join(out, 'bin', 'pip'),
        ['install', '--quiet', '--disable-pip-version-check', '-r', requirements],
        { maxBuffer: 16 * 1024 * 1024 },
      );
    },
  );
  return [path.join(dir, 'bin', 'python'), path.join(source, 'run_cases.py')];
}

async function javaRunner(): Promise<string[]> {
  const source = path.join(TOOLS, 'java');
  const files = ['pom.xml', 'src/main/java/RunCases.java'].map((f) => path.join(source, f));
  const dir = await cached(
    path.join(cacheRoot(), 'instance-sdk', `java-${keyOf(files)}`),
    async (out) => {
      cpSync(source, out, { recursive: true });
      await run(
        'mvn',
        [
          '-B',
          '-q',
          `-Dmaven.repo.local=${path.join(cacheRoot(), 'instance-sdk', 'm2')}`,
          'compile',
          'dependency:copy-dependencies',
        ],
        { cwd: out, maxBuffer: 16 * 1024 * 1024 },
      );
    },
  );
  const classpath = [
    path.join(dir, 'target', 'classes'),
    path.join(dir, 'target', 'dependency', '*'),
  ];
  return ['java', '-cp', classpath.join(':'), 'RunCases'];
}

const RUNNERS: Record<Sdk, () => Promise<string[]>> = {
  go: goRunner,
  python: pythonRunner,
  java: javaRunner,
};

/** Builds (or finds) the SDK's runner; call in beforeAll with a generous timeout. */
export function prepareSdk(sdk: Sdk): Promise<string[]> {
  return RUNNERS[sdk]();
}

/** Runs every case of `input.phase` with the SDK and returns its results. */
export async function runSdk(command: string[], input: object): Promise<Results> {
  const file = path.join(makeTempDir('datakey-sdk-'), 'input.json');
  writeFileSync(file, JSON.stringify(input), { mode: 0o600 });
  const [program, ...args] = command;
  const { stdout } = await run(program, [...args, file], {
    timeout: 120_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout) as Results;
}

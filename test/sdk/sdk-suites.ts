import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { cacheRoot } from '../../harness/devcluster/paths';

/**
 * The official-SDK suites of tools/sdk-tests/ (see its README): how each is
 * installed and run. Installs are cached under
 * `<cache root>/sdk-tests/<suite>-<hash>/` (cache root: ~/.cache/datakey-operator,
 * or DATAKEY_CACHE_DIR), keyed by a hash of the suite's folder (dependency
 * files and sources) and the toolchain's version, built in a temporary folder
 * and renamed into place, so an interrupted install is never taken for a
 * finished one. The Go module cache and the Maven repository
 * (`<cache root>/sdk-tests/maven-repository`) are shared by the suites.
 */

export const SDK_TESTS = path.resolve(__dirname, '../../tools/sdk-tests');

/** The cases every suite runs, in order (names as the suites print them). */
export const COMMON_CASES = JSON.parse(
  readFileSync(path.join(SDK_TESTS, 'cases.json'), 'utf8'),
) as string[];

export interface SdkSuite {
  /** Folder-like id, also the cache entry's name. */
  id: string;
  sdk: string;
  scheme: 'ACS3-HMAC-SHA256' | 'v1 (HMAC-SHA1)';
  cases: string[];
  /** Installs (or finds in the cache) what the suite needs; returns its command line. */
  prepare(): Promise<string[]>;
}

export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed after `timeoutMs`), without blocking the event loop. */
export function runProcess(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const INSTALL_TIMEOUT_MS = 8 * 60_000;

async function mustRun(command: string, args: string[], cwd?: string): Promise<string> {
  const r = await runProcess(command, args, { cwd, timeoutMs: INSTALL_TIMEOUT_MS });
  if (r.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (exit ${r.code}):\n${(r.stderr || r.stdout).slice(-3000)}`,
    );
  }
  return r.stdout;
}

/** A file, or every file under a folder (sorted; relative path and content), for the cache key. */
function hashTree(hash: ReturnType<typeof createHash>, file: string, base = file): void {
  if (statSync(file).isDirectory()) {
    for (const name of readdirSync(file).sort()) hashTree(hash, path.join(file, name), base);
    return;
  }
  hash
    .update(`${path.relative(base, file)}\0`)
    .update(readFileSync(file))
    .update('\0');
}

/**
 * The cache folder for `folders` (or files) of tools/sdk-tests built with `toolchain`;
 * runs `build(tmp)` into a temporary folder first when it is missing.
 */
async function cached(
  id: string,
  folders: string[],
  toolchain: string,
  build: (dir: string) => Promise<void>,
): Promise<string> {
  const hash = createHash('sha256').update(toolchain);
  for (const folder of folders) hashTree(hash, path.join(SDK_TESTS, folder));
  const dir = path.join(cacheRoot(), 'sdk-tests', `${id}-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(dir)) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await fs.rm(tmp, { recursive: true, force: true });
  await fs.mkdir(tmp, { recursive: true });
  try {
    await build(tmp);
    await fs.rename(tmp, dir);
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    // Another process (a parallel Jest worker) finished the same entry first.
    if (!existsSync(dir)) throw err;
  }
  return dir;
}

/** A virtual environment with `python/<folder>/requirements.txt`; runs `python/<folder>/suite.py`. */
async function preparePython(folder: 'openapi' | 'legacy'): Promise<string[]> {
  const version = (await mustRun('python3', ['--version'])).trim();
  const requirements = `python/${folder}/requirements.txt`;
  const venv = await cached(`python-${folder}`, [requirements], version, async (dir) => {
    await mustRun('python3', ['-m', 'venv', dir]);
    await mustRun(path.join(dir, 'bin', 'pip'), [
      'install',
      '--quiet',
      '--disable-pip-version-check',
      '-r',
      path.join(SDK_TESTS, requirements),
    ]);
  });
  return [path.join(venv, 'bin', 'python'), path.join(SDK_TESTS, 'python', folder, 'suite.py')];
}

/** Both Go suites are one module: built together, once. */
let goBuild: Promise<string> | undefined;
async function prepareGo(pkg: 'openapi' | 'legacy'): Promise<string[]> {
  goBuild ??= (async () => {
    const version = (await mustRun('go', ['version'])).trim();
    return cached('go', ['go'], version, async (dir) => {
      await mustRun(
        'go',
        ['build', '-o', `${dir}/`, './openapi', './legacy'],
        path.join(SDK_TESTS, 'go'),
      );
    });
  })();
  return [path.join(await goBuild, pkg)];
}

/** Dependencies resolved by Maven into a shared repository, Suite.java compiled with javac. */
async function prepareJava(): Promise<string[]> {
  const java = (await runProcess('java', ['-version'], { timeoutMs: 60_000 })).stderr;
  const repository = path.join(cacheRoot(), 'sdk-tests', 'maven-repository');
  const dir = await cached('java-openapi', ['java'], java.split('\n')[0], async (out) => {
    const classpath = path.join(out, 'classpath.txt');
    await mustRun(
      'mvn',
      [
        '--batch-mode',
        '--quiet',
        `-Dmaven.repo.local=${repository}`,
        'dependency:build-classpath',
        `-Dmdep.outputFile=${classpath}`,
      ],
      path.join(SDK_TESTS, 'java'),
    );
    await mustRun('javac', [
      '-d',
      path.join(out, 'classes'),
      '-cp',
      readFileSync(classpath, 'utf8').trim(),
      path.join(SDK_TESTS, 'java/src/main/java/io/datakey/sdksuite/Suite.java'),
    ]);
  });
  const classpath = readFileSync(path.join(dir, 'classpath.txt'), 'utf8').trim();
  return ['java', '-cp', `${path.join(dir, 'classes')}:${classpath}`, 'io.datakey.sdksuite.Suite'];
}

export const SDK_SUITES: SdkSuite[] = [
  {
    id: 'python-openapi',
    sdk: 'Python alibabacloud_kms20160120 3.3.1 + alibabacloud_tea_openapi 0.4.6',
    scheme: 'ACS3-HMAC-SHA256',
    cases: [...COMMON_CASES, 'other-scheme-refused'],
    prepare: () => preparePython('openapi'),
  },
  {
    id: 'python-legacy',
    sdk: 'Python aliyun-python-sdk-kms 2.16.5 + aliyun-python-sdk-core 2.16.1',
    scheme: 'v1 (HMAC-SHA1)',
    cases: COMMON_CASES,
    prepare: () => preparePython('legacy'),
  },
  {
    id: 'go-openapi',
    sdk: 'Go github.com/alibabacloud-go/kms-20160120/v3 v3.2.3 + darabonba-openapi/v2 v2.0.9',
    scheme: 'ACS3-HMAC-SHA256',
    cases: COMMON_CASES,
    prepare: () => prepareGo('openapi'),
  },
  {
    id: 'go-legacy',
    sdk: 'Go github.com/aliyun/alibaba-cloud-sdk-go v1.63.107 services/kms',
    scheme: 'v1 (HMAC-SHA1)',
    // This SDK gives callers no way to choose the signing time: no stale-timestamp case.
    cases: COMMON_CASES.filter((c) => c !== 'stale-timestamp'),
    prepare: () => prepareGo('legacy'),
  },
  {
    id: 'java-openapi',
    sdk: 'Java com.aliyun:kms20160120 1.2.3 (tea-openapi 0.3.5)',
    scheme: 'ACS3-HMAC-SHA256',
    cases: COMMON_CASES,
    prepare: prepareJava,
  },
];

export interface Target {
  name: 'http' | 'https';
  endpoint: string;
  protocol: 'http' | 'https';
  ca: string | null;
}

export interface CaseResult {
  target: string;
  case: string;
  ok: boolean;
  error?: string;
}

/** Runs one suite (one process, every case, every target); returns its result lines. */
export async function runSuite(
  command: string[],
  targets: Target[],
  credentials: { accessKeyId: string; accessKeySecret: string },
): Promise<{ code: number | null; results: CaseResult[]; stderr: string }> {
  const [bin, ...args] = command;
  const r = await runProcess(bin, args, {
    env: {
      ...process.env,
      KMS_TARGETS: JSON.stringify(targets),
      KMS_ACCESS_KEY_ID: credentials.accessKeyId,
      KMS_ACCESS_KEY_SECRET: credentials.accessKeySecret,
      // No __pycache__ in the work tree.
      PYTHONDONTWRITEBYTECODE: '1',
    },
    timeoutMs: 5 * 60_000,
  });
  const results = r.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as CaseResult);
  return { code: r.code, results, stderr: r.stderr };
}

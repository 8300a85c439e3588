// The project's Dockerfile built here, without any container registry:
//   1. a local Node 20 base image (this machine's node binary, the libraries it
//      links, npm, and busybox for the shell RUN steps need), written with
//      writeImageArchive and cached outside the work tree;
//   2. `buildah bud` of the unchanged Dockerfile with `--build-arg BASE=<local base>`,
//      the host network and the host's CA bundle mounted for `npm ci`;
//   3. a docker-archive (`buildah push`) cached by a hash of the build inputs;
//   4. `ctr images import` into the node's containerd (importImage).
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  busyboxLayer,
  importImage,
  writeImageArchive,
  type ContainerdTarget,
  type LayerEntry,
  type WrittenImage,
} from './images';
import { cacheRoot, repoRoot } from './paths';
import { onPath } from './node';
import { DEFAULT_AGENT_IMAGE } from '../../src/injection/options';

/** The name pods use (`imagePullPolicy: Never`). */
/** The image the local cluster runs: also the operator's default agent image. */
export const OPERATOR_IMAGE = DEFAULT_AGENT_IMAGE;

const HOST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

function run(
  file: string,
  args: string[],
  opts: { log?: (line: string) => void; cwd?: string } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { maxBuffer: 64 << 20, cwd: opts.cwd },
      (err, stdout, stderr) => {
        if (err) {
          const tail = `${stdout}\n${stderr}`.trim().split('\n').slice(-30).join('\n');
          reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${tail}`));
        } else resolve(stdout);
      },
    );
    if (opts.log) {
      const log = opts.log;
      child.stdout?.on('data', (d: Buffer) =>
        d
          .toString()
          .split('\n')
          .filter((l) => l.trim())
          .forEach(log),
      );
    }
  });
}

/** Why this machine cannot build the image, or undefined when it can. */
export function imageBuildUnsupported(): string | undefined {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (process.getuid?.() !== 0) return 'not running as root (buildah runs rootful here)';
  if (!onPath('buildah')) return 'buildah is missing (npm run setup, or apt-get install buildah)';
  return undefined;
}

// ---------------------------------------------------------------- buildah storage

export interface BuildahStore {
  root: string;
  runroot: string;
}

/** buildah's own storage, outside the work tree and apart from any system storage. */
export function buildahStore(): BuildahStore {
  const dir = path.join(cacheRoot(), 'buildah');
  return { root: path.join(dir, 'root'), runroot: path.join(dir, 'runroot') };
}

function buildah(store: BuildahStore, args: string[], log?: (l: string) => void): Promise<string> {
  return run('buildah', ['--root', store.root, '--runroot', store.runroot, ...args], { log });
}

async function hasImage(store: BuildahStore, name: string): Promise<boolean> {
  try {
    await buildah(store, ['inspect', '--type', 'image', '--format', '{{.FromImageID}}', name]);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- the local Node base

/** The libraries a dynamically linked binary loads, as `ldd` lists them (absolute paths). */
function sharedLibraries(binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

function npmDir(nodeBinary: string): string {
  const prefix = path.dirname(path.dirname(fs.realpathSync(nodeBinary)));
  for (const p of [
    path.join(prefix, 'lib', 'node_modules', 'npm'),
    '/usr/lib/node_modules/npm',
    '/usr/local/lib/node_modules/npm',
  ]) {
    if (fs.existsSync(path.join(p, 'bin', 'npm-cli.js'))) return p;
  }
  throw new Error(`npm not found next to ${nodeBinary}`);
}

function fileHash(h: ReturnType<typeof createHash>, file: string): void {
  const st = fs.statSync(file);
  h.update(`${file}\0${st.size}\0${st.mtimeMs}\0`);
}

/**
 * A Node base image made from this machine's Node (the same major as the
 * official `node:20-bookworm-slim`): node and npm under /usr/local like the
 * official image, the glibc libraries node links, busybox as /bin/sh for RUN
 * steps, /tmp. Named by the Node version and a hash of its inputs.
 */
export function nodeBase(nodeBinary = process.execPath): {
  name: string;
  archive: string;
  write: () => WrittenImage;
} {
  const node = fs.realpathSync(nodeBinary);
  const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim().replace(/^v/, '');
  if (!version.startsWith('20.')) {
    throw new Error(`the local base needs Node 20 (like node:20-bookworm-slim), found ${version}`);
  }
  const npm = npmDir(node);
  const libs = sharedLibraries(node);
  const h = createHash('sha256');
  for (const f of [node, path.join(npm, 'package.json'), ...libs]) fileHash(h, f);
  h.update('base-v1');
  const tag = `${version}-${h.digest('hex').slice(0, 12)}`;
  const name = `localhost/datakey-node-base:${tag}`;
  const archive = path.join(cacheRoot(), 'base-images', `datakey-node-base-${tag}.tar`);
  const write = (): WrittenImage => {
    const entries: LayerEntry[] = [
      { type: 'file', path: '/usr/local/bin/node', source: node, mode: 0o755 },
      {
        type: 'symlink',
        path: '/usr/local/bin/npm',
        target: '../lib/node_modules/npm/bin/npm-cli.js',
      },
      {
        type: 'symlink',
        path: '/usr/local/bin/npx',
        target: '../lib/node_modules/npm/bin/npx-cli.js',
      },
      { type: 'dir', path: '/etc/ssl/certs', mode: 0o755 },
      { type: 'dir', path: '/usr/local/etc', mode: 0o755 },
    ];
    for (const lib of libs) {
      entries.push({ type: 'file', path: lib, source: fs.realpathSync(lib), mode: 0o755 });
    }
    return writeImageArchive(
      {
        name,
        layers: [
          busyboxLayer(),
          { entries },
          { fromDir: { dir: npm, at: '/usr/local/lib/node_modules/npm' } },
        ],
        config: {
          cmd: ['node'],
          env: { NODE_VERSION: version },
          labels: { 'org.opencontainers.image.description': 'local Node base of datakey-operator' },
        },
      },
      archive,
    );
  };
  return { name, archive, write };
}

// ---------------------------------------------------------------- the image

/** What the Dockerfile reads from the context (.dockerignore keeps out the rest). */
const CONTEXT_INPUTS = [
  'Dockerfile',
  '.dockerignore',
  'package.json',
  'package-lock.json',
  'tsconfig.json',
  'tsconfig.build.json',
  'src',
  'crds',
];

function walkFiles(p: string, out: string[]): void {
  const st = fs.statSync(p);
  if (st.isDirectory()) {
    for (const e of fs.readdirSync(p).sort()) walkFiles(path.join(p, e), out);
  } else out.push(p);
}

/** A hash of every build input: the context files and the base image. */
export function inputsKey(baseName: string, root = repoRoot): string {
  const h = createHash('sha256');
  h.update(`${baseName}\0`);
  const files: string[] = [];
  for (const i of CONTEXT_INPUTS) walkFiles(path.join(root, i), files);
  for (const f of files) {
    h.update(`${path.relative(root, f)}\0`);
    h.update(fs.readFileSync(f));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 16);
}

export interface BuildResult extends WrittenImage {
  /** False when a cached archive of the same inputs was reused. */
  built: boolean;
  seconds: { base: number; build: number; export: number };
  /** Bytes of the docker-archive (the uncompressed image). */
  size: number;
}

/**
 * Builds the root Dockerfile with buildah against the local Node base and
 * writes a docker-archive named `name`, unless an archive of the same inputs
 * is cached already.
 */
export async function buildImage(
  o: { name?: string; log?: (line: string) => void; force?: boolean } = {},
): Promise<BuildResult> {
  const why = imageBuildUnsupported();
  if (why) throw new Error(`cannot build the image here: ${why}`);
  const name = o.name ?? OPERATOR_IMAGE;
  const log = o.log ?? (() => undefined);
  const store = buildahStore();
  const seconds = { base: 0, build: 0, export: 0 };
  const base = nodeBase();
  const key = inputsKey(base.name);
  const dir = path.join(cacheRoot(), 'images');
  const file = path.join(dir, `datakey-operator-${key}.tar`);
  const idFile = `${file}.id`;
  if (!o.force && fs.existsSync(file) && fs.existsSync(idFile)) {
    const id = fs.readFileSync(idFile, 'utf8').trim();
    log(`image: reusing ${file} (inputs unchanged)`);
    return { name, file, id, built: false, seconds, size: fs.statSync(file).size };
  }

  let t = Date.now();
  if (!(await hasImage(store, base.name))) {
    if (!fs.existsSync(base.archive)) {
      log(`image: writing the local Node base ${base.name}`);
      base.write();
    }
    log(`image: loading ${base.archive} into buildah`);
    await buildah(store, ['pull', '--quiet', `docker-archive:${base.archive}`]);
    if (!(await hasImage(store, base.name))) {
      throw new Error(`buildah did not keep the name ${base.name} of ${base.archive}`);
    }
  }
  seconds.base = (Date.now() - t) / 1000;

  // RUN steps reach the npm registry over the host network; on machines whose
  // TLS is intercepted, npm inside needs the host's CA bundle. Both are mounts:
  // nothing of them stays in the image and the Dockerfile does not change.
  const tmp = fs.mkdtempSync(path.join(cacheRoot(), 'image-build-'));
  const mounts: string[] = [];
  if (fs.existsSync(HOST_CA_BUNDLE)) {
    const npmrc = path.join(tmp, 'npmrc');
    fs.writeFileSync(npmrc, `cafile=${HOST_CA_BUNDLE}\n`);
    mounts.push('-v', `${HOST_CA_BUNDLE}:${HOST_CA_BUNDLE}:ro`);
    mounts.push('-v', `${npmrc}:/usr/local/etc/npmrc:ro`);
  }
  t = Date.now();
  try {
    log(`image: buildah bud (BASE=${base.name})`);
    await buildah(
      store,
      [
        'bud',
        '--layers',
        '--pull=never',
        '--network',
        'host',
        '--build-arg',
        `BASE=${base.name}`,
        ...mounts,
        '-f',
        path.join(repoRoot, 'Dockerfile'),
        '-t',
        name,
        repoRoot,
      ],
      log,
    );
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  seconds.build = (Date.now() - t) / 1000;

  t = Date.now();
  fs.mkdirSync(dir, { recursive: true });
  const partial = `${file}.tmp-${process.pid}`;
  fs.rmSync(partial, { force: true });
  await buildah(store, ['push', '--quiet', name, `docker-archive:${partial}:${name}`]);
  const id = (
    await buildah(store, ['inspect', '--type', 'image', '--format', '{{.FromImageID}}', name])
  ).trim();
  fs.renameSync(partial, file);
  fs.writeFileSync(idFile, `${id}\n`);
  seconds.export = (Date.now() - t) / 1000;
  // Only the newest archive is kept.
  for (const e of fs.readdirSync(dir)) {
    if (e.startsWith('datakey-operator-') && !e.startsWith(`datakey-operator-${key}.tar`)) {
      fs.rmSync(path.join(dir, e), { force: true });
    }
  }
  return { name, file, id, built: true, seconds, size: fs.statSync(file).size };
}

/** Builds (or reuses) the image and imports it into a containerd (the node's). */
export async function buildAndImport(
  target: ContainerdTarget,
  o: { log?: (line: string) => void; force?: boolean } = {},
): Promise<BuildResult & { importSeconds: number }> {
  const img = await buildImage(o);
  const t = Date.now();
  await importImage(img, target);
  return { ...img, importSeconds: (Date.now() - t) / 1000 };
}

// Container images without a registry: a docker-archive tarball written by
// code (layers from folders or from explicit entries, a config, a name), and
// its import into a containerd namespace with `ctr images import`.
//
// The archive is the format `docker save` writes and containerd imports:
//   manifest.json                 [{ Config, RepoTags, Layers }]
//   <config-sha>.json             image config, rootfs.diff_ids = sha256 of each layer tar
//   <layer-sha>/layer.tar         one uncompressed tar per layer
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** One file-system entry of a layer. Paths are absolute inside the image ("/bin/sh"). */
export type LayerEntry =
  | { type: 'dir'; path: string; mode?: number; uid?: number; gid?: number }
  | {
      type: 'file';
      path: string;
      /** Contents, or `source`: a host file whose contents are copied. */
      data?: Buffer | string;
      source?: string;
      mode?: number;
      uid?: number;
      gid?: number;
    }
  | { type: 'symlink'; path: string; target: string };

/**
 * A layer: the tree of a host folder placed at `at` (default "/"), owned by
 * uid/gid 0 unless `uid`/`gid` say otherwise, and/or explicit entries.
 */
export interface LayerSpec {
  fromDir?: { dir: string; at?: string; uid?: number; gid?: number };
  entries?: LayerEntry[];
}

export interface ImageConfig {
  entrypoint?: string[];
  cmd?: string[];
  /** "uid[:gid]" or a user name known to the image's /etc/passwd. */
  user?: string;
  env?: Record<string, string>;
  workingDir?: string;
  labels?: Record<string, string>;
}

export interface ImageSpec {
  /** Full reference, e.g. "datakey.local/busybox:1". Used as is by pods (imagePullPolicy: Never). */
  name: string;
  /** More names for the same image (e.g. the public name examples use, so they run without a registry). */
  aliases?: string[];
  layers: LayerSpec[];
  config?: ImageConfig;
  /** Defaults to the machine's architecture. */
  architecture?: string;
}

export interface WrittenImage {
  name: string;
  file: string;
  /** sha256 of the image config: the image ID containerd reports. */
  id: string;
}

// ---------------------------------------------------------------- tar writer

const BLOCK = 512;

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(
  name: string,
  typeflag: string,
  size: number,
  mode: number,
  uid: number,
  gid: number,
  linkname = '',
): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(uid, 8), 108, 'ascii');
  h.write(octal(gid, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(0, 12), 136, 'ascii'); // mtime 0: reproducible layers
  h.write('        ', 148, 'ascii');
  h.write(typeflag, 156, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

function pad(n: number): Buffer {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/** A PAX extended header carrying long names (or link targets). */
function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len)
    len = String(len).length + Buffer.byteLength(body);
  return Buffer.from(`${len}${body}`, 'utf8');
}

class TarWriter {
  private readonly chunks: Buffer[] = [];

  add(
    name: string,
    typeflag: '0' | '2' | '5',
    data: Buffer,
    mode: number,
    uid: number,
    gid: number,
    linkname = '',
  ): void {
    const records: Buffer[] = [];
    if (Buffer.byteLength(name) > 99) records.push(paxRecord('path', name));
    if (Buffer.byteLength(linkname) > 99) records.push(paxRecord('linkpath', linkname));
    if (records.length > 0) {
      const pax = Buffer.concat(records);
      this.chunks.push(header('PaxHeader', 'x', pax.length, 0o644, 0, 0), pax, pad(pax.length));
    }
    this.chunks.push(
      header(name.slice(0, 99), typeflag, data.length, mode, uid, gid, linkname.slice(0, 99)),
    );
    if (data.length > 0) this.chunks.push(data, pad(data.length));
  }

  finish(): Buffer {
    return Buffer.concat([...this.chunks, Buffer.alloc(BLOCK * 2)]);
  }
}

// ---------------------------------------------------------------- layers

function normalize(p: string): string {
  const rel = path.posix.normalize(`/${p}`).replace(/^\/+/, '');
  if (rel === '' || rel.startsWith('..')) throw new Error(`bad path in image layer: ${p}`);
  return rel;
}

function walkDir(
  root: string,
  at: string,
  uid: number,
  gid: number,
  out: Map<string, LayerEntry>,
): void {
  const visit = (host: string, inImage: string): void => {
    for (const name of fs.readdirSync(host).sort()) {
      const h = path.join(host, name);
      const i = path.posix.join(inImage, name);
      const st = fs.lstatSync(h);
      if (st.isSymbolicLink()) {
        out.set(normalize(i), { type: 'symlink', path: i, target: fs.readlinkSync(h) });
      } else if (st.isDirectory()) {
        out.set(normalize(i), { type: 'dir', path: i, mode: st.mode & 0o7777, uid, gid });
        visit(h, i);
      } else if (st.isFile()) {
        out.set(normalize(i), {
          type: 'file',
          path: i,
          source: h,
          mode: st.mode & 0o7777,
          uid,
          gid,
        });
      } // sockets, fifos and devices are not part of an image
    }
  };
  visit(root, at);
}

/** The tar of one layer; parent directories are added where missing. */
export function layerTar(spec: LayerSpec): Buffer {
  const entries = new Map<string, LayerEntry>();
  if (spec.fromDir) {
    const { dir, at = '/', uid = 0, gid = 0 } = spec.fromDir;
    if (!fs.statSync(dir).isDirectory()) throw new Error(`not a folder: ${dir}`);
    walkDir(dir, at, uid, gid, entries);
  }
  for (const e of spec.entries ?? []) entries.set(normalize(e.path), e);
  for (const key of [...entries.keys()]) {
    let parent = path.posix.dirname(key);
    while (parent !== '.' && !entries.has(parent)) {
      entries.set(parent, { type: 'dir', path: parent, mode: 0o755 });
      parent = path.posix.dirname(parent);
    }
  }
  const tar = new TarWriter();
  // Sorted: parents come before their children.
  for (const key of [...entries.keys()].sort()) {
    const e = entries.get(key)!;
    if (e.type === 'dir') {
      tar.add(`${key}/`, '5', Buffer.alloc(0), e.mode ?? 0o755, e.uid ?? 0, e.gid ?? 0);
    } else if (e.type === 'symlink') {
      tar.add(key, '2', Buffer.alloc(0), 0o777, 0, 0, e.target);
    } else {
      let data: Buffer;
      let mode = e.mode;
      if (e.source !== undefined) {
        data = fs.readFileSync(e.source);
        mode ??= fs.statSync(e.source).mode & 0o7777;
      } else {
        data = Buffer.from(e.data ?? '');
      }
      tar.add(key, '0', data, mode ?? 0o644, e.uid ?? 0, e.gid ?? 0);
    }
  }
  return tar.finish();
}

// ---------------------------------------------------------------- archive

function sha256(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}

function goArch(): string {
  const map: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ppc64: 'ppc64le',
    s390x: 's390x',
  };
  return map[process.arch] ?? process.arch;
}

/** Writes `spec` as a docker-archive tarball to `file`. */
export function writeImageArchive(spec: ImageSpec, file: string): WrittenImage {
  if (!/^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*:[\w][\w.-]{0,127}$/.test(spec.name)) {
    throw new Error(`image name must be "repository:tag" in lower case: ${spec.name}`);
  }
  if (spec.layers.length === 0) throw new Error(`image ${spec.name} has no layers`);
  const layers = spec.layers.map(layerTar);
  const diffIds = layers.map((l) => `sha256:${sha256(l)}`);
  const c = spec.config ?? {};
  const config = {
    architecture: spec.architecture ?? goArch(),
    os: 'linux',
    created: '1970-01-01T00:00:00Z',
    config: {
      ...(c.entrypoint ? { Entrypoint: c.entrypoint } : {}),
      ...(c.cmd ? { Cmd: c.cmd } : {}),
      ...(c.user ? { User: c.user } : {}),
      Env: Object.entries({
        PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        ...(c.env ?? {}),
      }).map(([k, v]) => `${k}=${v}`),
      ...(c.workingDir ? { WorkingDir: c.workingDir } : {}),
      ...(c.labels ? { Labels: c.labels } : {}),
    },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: layers.map(() => ({
      created: '1970-01-01T00:00:00Z',
      created_by: 'datakey-operator images.ts',
    })),
  };
  const configJson = Buffer.from(JSON.stringify(config));
  const configSha = sha256(configJson);
  const layerNames = diffIds.map((d) => `${d.slice('sha256:'.length)}/layer.tar`);
  const manifest = Buffer.from(
    JSON.stringify([
      {
        Config: `${configSha}.json`,
        RepoTags: [spec.name, ...(spec.aliases ?? [])],
        Layers: layerNames,
      },
    ]),
  );
  const tar = new TarWriter();
  tar.add(`${configSha}.json`, '0', configJson, 0o644, 0, 0);
  layers.forEach((l, i) => {
    tar.add(`${path.posix.dirname(layerNames[i])}/`, '5', Buffer.alloc(0), 0o755, 0, 0);
    tar.add(layerNames[i], '0', l, 0o644, 0, 0);
  });
  tar.add('manifest.json', '0', manifest, 0o644, 0, 0);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, tar.finish());
  fs.renameSync(tmp, file);
  return { name: spec.name, file, id: `sha256:${configSha}` };
}

export interface ContainerdTarget {
  /** The `ctr` binary (Debian's containerd package ships it). */
  ctr?: string;
  /** containerd's gRPC socket. */
  address: string;
  /** The CRI plugin's namespace is "k8s.io". */
  namespace?: string;
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Imports a written archive into containerd (unpacked, ready for `imagePullPolicy: Never`). */
export async function importImage(img: WrittenImage, target: ContainerdTarget): Promise<void> {
  const ctr = target.ctr ?? 'ctr';
  const ns = target.namespace ?? 'k8s.io';
  await run(ctr, ['-a', target.address, '-n', ns, 'images', 'import', img.file]);
}

// ---------------------------------------------------------------- images the dev cluster uses

/** Busybox (from Debian's busybox-static) with every applet linked, /etc/passwd and /tmp. */
export function busyboxLayer(busybox = findBusybox()): LayerSpec {
  if (!busybox) throw new Error('no static busybox found (apt-get install busybox-static)');
  const entries: LayerEntry[] = [
    { type: 'file', path: '/bin/busybox', source: busybox, mode: 0o755 },
    {
      type: 'file',
      path: '/etc/passwd',
      data: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    },
    { type: 'file', path: '/etc/group', data: 'root:x:0:\nnogroup:x:65534:\n' },
    { type: 'dir', path: '/tmp', mode: 0o1777 },
    { type: 'dir', path: '/root', mode: 0o700 },
  ];
  for (const applet of BUSYBOX_APPLET_DIRS) {
    for (const name of busyboxApplets(busybox, applet)) {
      const p = `/${applet}/${name}`;
      if (p !== '/bin/busybox') entries.push({ type: 'symlink', path: p, target: '/bin/busybox' });
    }
  }
  return { entries };
}

const BUSYBOX_APPLET_DIRS = ['bin', 'sbin', 'usr/bin', 'usr/sbin'];
let appletCache: { busybox: string; list: string[] } | undefined;

function busyboxApplets(busybox: string, dir: string): string[] {
  if (appletCache?.busybox !== busybox) {
    const list = execFileSync(busybox, ['--list-full'], { encoding: 'utf8' }).trim().split('\n');
    appletCache = { busybox, list };
  }
  return appletCache.list
    .filter((p) => path.posix.dirname(p) === dir)
    .map((p) => path.posix.basename(p));
}

/** A statically linked busybox on this machine, or undefined. */
export function findBusybox(): string | undefined {
  for (const p of ['/usr/bin/busybox', '/bin/busybox']) {
    try {
      const head = Buffer.alloc(4);
      const fd = fs.openSync(p, 'r');
      fs.readSync(fd, head, 0, 4, 0);
      fs.closeSync(fd);
      if (head.toString('latin1') === '\x7fELF' && isStatic(p)) return p;
    } catch {
      // try the next
    }
  }
  return undefined;
}

/** An ELF without a PT_INTERP program header needs no dynamic loader. */
function isStatic(file: string): boolean {
  const b = fs.readFileSync(file);
  if (b[4] !== 2) return false; // 64-bit only
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (b.readUInt32LE(phoff + i * phentsize) === 3) return false; // PT_INTERP
  }
  return true;
}

/** Fixed local names: pods use them with `imagePullPolicy: Never`. */
export const SANDBOX_IMAGE = 'datakey.local/pause:1';
export const BUSYBOX_IMAGE = 'datakey.local/busybox:1';
/**
 * The name examples/ uses. The local node has no registry, so Debian's busybox
 * is imported under it too (containerd normalizes `busybox:1.36` to this); a
 * cluster with a registry pulls the official image instead.
 */
export const EXAMPLES_BUSYBOX_IMAGE = 'docker.io/library/busybox:1.36';

/** The pod sandbox image: busybox sleeping forever (SIGKILLed when the sandbox stops). */
export function sandboxImageSpec(): ImageSpec {
  return {
    name: SANDBOX_IMAGE,
    layers: [busyboxLayer()],
    config: { entrypoint: ['/bin/sleep', 'infinity'] },
  };
}

/** The image test workloads run: a shell and coreutils. */
export function busyboxImageSpec(): ImageSpec {
  return {
    name: BUSYBOX_IMAGE,
    aliases: [EXAMPLES_BUSYBOX_IMAGE],
    layers: [busyboxLayer()],
    config: { cmd: ['/bin/sh'] },
  };
}

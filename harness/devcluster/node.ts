// The local cluster's node: configuration of containerd (Debian's, with runc)
// and the kubelet, and the removal of every piece of host state they leave.
// The processes themselves are started and stopped by cluster.ts.
import { execFile } from 'node:child_process';
import * as dns from 'node:dns';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const CNI_BIN_DIR = '/usr/lib/cni';
export const POD_CIDR = '10.244.0.0/24';
/** The bridge's address: the pods' gateway, where the API server and CoreDNS are reached from pods. */
export const BRIDGE_IP = '10.244.0.1';
/** The CNI bridge; unique enough not to collide with docker0/cni0 of other tools. */
export const BRIDGE = 'dkbr0';

/**
 * Host paths the kubelet, containerd and the CNI plugins write to whatever
 * their configured folders are. What a node adds there is removed by `down`.
 */
export const HOST_PATHS = [
  '/var/lib/kubelet',
  '/var/lib/cni',
  '/var/log/containers',
  '/run/containerd',
];

const CGROUP_ROOT = '/sys/fs/cgroup';

export interface NodePaths {
  dir: string;
  containerdConfig: string;
  containerdRoot: string;
  containerdState: string;
  containerdSock: string;
  cniConfDir: string;
  cniIpamDir: string;
  kubeletRoot: string;
  kubeletCertDir: string;
  kubeletConfig: string;
  podLogsDir: string;
  imagesDir: string;
  /** What existed in HOST_PATHS before the node started (JSON). */
  hostSnapshot: string;
  /** The host's sysctls before the node started (JSON, see network.ts). */
  sysctls: string;
}

export function nodePaths(stateDir: string): NodePaths {
  const dir = path.join(stateDir, 'node');
  return {
    dir,
    containerdConfig: path.join(dir, 'containerd.toml'),
    containerdRoot: path.join(dir, 'containerd', 'root'),
    containerdState: path.join(dir, 'containerd', 'state'),
    containerdSock: path.join(dir, 'containerd', 'containerd.sock'),
    cniConfDir: path.join(dir, 'cni', 'net.d'),
    cniIpamDir: path.join(dir, 'cni', 'ipam'),
    kubeletRoot: path.join(dir, 'kubelet'),
    kubeletCertDir: path.join(dir, 'kubelet-pki'),
    kubeletConfig: path.join(dir, 'kubelet-config.yaml'),
    podLogsDir: path.join(dir, 'pod-logs'),
    imagesDir: path.join(dir, 'images'),
    hostSnapshot: path.join(stateDir, 'node-host-snapshot.json'),
    sysctls: path.join(stateDir, 'node-sysctls.json'),
  };
}

/** The executable `bin` on PATH or in the sbin/bin folders root tools live in. */
export function onPath(bin: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin']);
  for (const d of dirs) {
    const p = path.join(d, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

export interface NodeTools {
  containerd: string;
  ctr: string;
  runc: string;
}

/** The tools a node needs, or the one-line reason why this machine cannot run one. */
export function nodeSupport(): { tools: NodeTools } | { reason: string } {
  if (process.platform !== 'linux') return { reason: `not Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { reason: 'not running as root' };
  const containerd = onPath('containerd');
  const ctr = onPath('ctr');
  const runc = onPath('runc');
  const missing = [
    !containerd && 'containerd',
    !ctr && 'ctr',
    !runc && 'runc',
    !fs.existsSync(path.join(CNI_BIN_DIR, 'bridge')) && `${CNI_BIN_DIR}/bridge`,
    !fs.existsSync('/usr/bin/busybox') && !fs.existsSync('/bin/busybox') && 'busybox',
    // kube-proxy's rules and the bridge made before the first pod.
    !onPath('iptables-restore') && 'iptables',
    !onPath('ip') && 'ip',
  ].filter(Boolean);
  if (missing.length > 0 || !containerd || !ctr || !runc) {
    return {
      reason:
        `missing ${missing.join(', ')} (apt-get install containerd runc ` +
        'containernetworking-plugins iptables iproute2 busybox-static)',
    };
  }
  return { tools: { containerd, ctr, runc } };
}

/**
 * The node's name: the machine's hostname when it resolves to loopback (the
 * API server dials the kubelet by this name for logs and exec), else "localhost".
 */
export async function nodeName(): Promise<string> {
  const host = os.hostname().toLowerCase();
  if (/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(host)) {
    try {
      const addrs = await dns.promises.lookup(host, { all: true });
      if (
        addrs.length > 0 &&
        addrs.every((a) => a.address.startsWith('127.') || a.address === '::1')
      ) {
        return host;
      }
    } catch {
      // fall through
    }
  }
  return 'localhost';
}

export function containerdConfig(p: NodePaths, sandboxImage: string): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return [
    'version = 2',
    `root = ${JSON.stringify(p.containerdRoot)}`,
    `state = ${JSON.stringify(p.containerdState)}`,
    // Plugins that would write outside root/state, or need kernels/filesystems we do not use.
    'disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",',
    '  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",',
    '  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]',
    '[grpc]',
    `  address = ${JSON.stringify(p.containerdSock)}`,
    '[ttrpc]',
    '  address = ""',
    '[debug]',
    '  level = "warn"',
    `[${cri}]`,
    `  sandbox_image = ${JSON.stringify(sandboxImage)}`,
    // Required here: runc cannot write oom_score_adj without CAP_SYS_RESOURCE.
    '  restrict_oom_score_adj = true',
    '  netns_mounts_under_state_dir = true',
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    '  enable_selinux = false',
    `[${cri}.cni]`,
    `  bin_dir = ${JSON.stringify(CNI_BIN_DIR)}`,
    `  conf_dir = ${JSON.stringify(p.cniConfDir)}`,
    '  max_conf_num = 1',
    `[${cri}.containerd]`,
    '  default_runtime_name = "runc"',
    '  snapshotter = "overlayfs"',
    `[${cri}.containerd.runtimes.runc]`,
    '  runtime_type = "io.containerd.runc.v2"',
    `[${cri}.containerd.runtimes.runc.options]`,
    '  SystemdCgroup = false',
    '',
  ].join('\n');
}

export function cniConflist(p: NodePaths): string {
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: 'datakey-dev',
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: POD_CIDR }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: p.cniIpamDir,
          },
        },
        { type: 'loopback' },
      ],
    },
    null,
    2,
  );
}

export interface KubeletOptions {
  port: number;
  healthzPort: number;
  clientCA: string;
  /** The cluster DNS Service's ClusterIP and domain, written into the pods' resolv.conf. */
  clusterDNS: string;
  clusterDomain: string;
}

export function kubeletConfig(p: NodePaths, o: KubeletOptions): string {
  return [
    'apiVersion: kubelet.config.k8s.io/v1beta1',
    'kind: KubeletConfiguration',
    'address: 127.0.0.1',
    `port: ${o.port}`,
    'healthzBindAddress: 127.0.0.1',
    `healthzPort: ${o.healthzPort}`,
    'readOnlyPort: 0',
    `clusterDNS: [${o.clusterDNS}]`,
    `clusterDomain: ${o.clusterDomain}`,
    `containerRuntimeEndpoint: unix://${p.containerdSock}`,
    'cgroupDriver: cgroupfs',
    // Required here: this machine has cgroup v1 only.
    'failCgroupV1: false',
    'failSwapOn: false',
    'authentication:',
    '  anonymous: {enabled: false}',
    '  webhook: {enabled: true}',
    `  x509: {clientCAFile: ${JSON.stringify(o.clientCA)}}`,
    'authorization: {mode: Webhook}',
    // A busy test machine must never evict test pods or their images.
    'evictionHard:',
    '  memory.available: 1Mi',
    '  nodefs.available: 1%',
    '  nodefs.inodesFree: 1%',
    '  imagefs.available: 1%',
    'imageGCHighThresholdPercent: 100',
    'imageGCLowThresholdPercent: 99',
    `podLogsDir: ${JSON.stringify(p.podLogsDir)}`,
    'serializeImagePulls: false',
    'registerNode: true',
    'nodeStatusReportFrequency: 10s',
    'syncFrequency: 10s',
    '',
  ].join('\n');
}

/** Writes every config file of the node. */
export function writeNodeFiles(p: NodePaths, o: KubeletOptions & { sandboxImage: string }): void {
  for (const d of [
    p.dir,
    p.cniConfDir,
    p.cniIpamDir,
    p.kubeletRoot,
    p.kubeletCertDir,
    p.podLogsDir,
    p.imagesDir,
  ]) {
    fs.mkdirSync(d, { recursive: true });
  }
  fs.writeFileSync(p.containerdConfig, containerdConfig(p, o.sandboxImage));
  fs.writeFileSync(path.join(p.cniConfDir, '10-datakey-dev.conflist'), cniConflist(p));
  fs.writeFileSync(p.kubeletConfig, kubeletConfig(p, o));
}

// ---------------------------------------------------------------- host state

function walk(root: string, out: string[]): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(root, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const p = path.join(root, e.name);
    out.push(p);
    if (e.isDirectory()) walk(p, out);
  }
}

/** Every path under HOST_PATHS (and whether each root exists). */
export function hostFiles(): string[] {
  const out: string[] = [];
  for (const root of HOST_PATHS) {
    if (fs.existsSync(root)) {
      out.push(root);
      walk(root, out);
    }
  }
  return out.sort();
}

/** Records what exists in HOST_PATHS before a node starts, unless a record exists already. */
export function snapshotHost(p: NodePaths): void {
  if (fs.existsSync(p.hostSnapshot)) return;
  fs.writeFileSync(p.hostSnapshot, JSON.stringify(hostFiles()));
}

/** Mount points at or under dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  const prefix = path.resolve(dir);
  let info = '';
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string): string =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const points = info
    .split('\n')
    .filter(Boolean)
    .map((l) => unescape(l.split(' ')[4]))
    .filter((m) => m === prefix || m.startsWith(`${prefix}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** kubepods cgroups in every hierarchy, deepest first. */
export function kubepodsCgroups(): string[] {
  const out: string[] = [];
  let hierarchies: string[] = [];
  try {
    hierarchies = fs.readdirSync(CGROUP_ROOT).map((h) => path.join(CGROUP_ROOT, h));
  } catch {
    return out;
  }
  for (const h of [CGROUP_ROOT, ...hierarchies]) {
    const k = path.join(h, 'kubepods');
    try {
      if (!fs.statSync(k).isDirectory()) continue;
    } catch {
      continue;
    }
    const dirs = [k];
    const visit = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) {
          dirs.push(path.join(d, e.name));
          visit(path.join(d, e.name));
        }
      }
    };
    visit(k);
    out.push(...dirs);
  }
  return out.sort((a, b) => b.split('/').length - a.split('/').length);
}

/** PIDs in the kubepods cgroups (the pods' processes). */
export function podPids(): number[] {
  const pids = new Set<number>();
  for (const d of kubepodsCgroups()) {
    try {
      for (const l of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n')) {
        if (l.trim()) pids.add(Number(l));
      }
    } catch {
      // gone
    }
  }
  return [...pids];
}

/** containerd shims serving our containerd (their command line names its socket). */
export function shimPids(p: NodePaths): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (/containerd-shim/.test(argv[0]) && argv.includes(p.containerdSock)) out.push(Number(e));
    } catch {
      // exited
    }
  }
  return out;
}

export function bridgeExists(): boolean {
  return fs.existsSync(`/sys/class/net/${BRIDGE}`);
}

function sh(file: string, args: string[]): Promise<void> {
  return new Promise((resolve) => {
    execFile(file, args, () => resolve());
  });
}

async function killAndWait(
  pids: () => number[],
  what: string,
  log: (m: string) => void,
): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const left = pids();
    if (left.length === 0) return;
    if (round === 0) log(`killing ${left.length} ${what}`);
    for (const pid of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const left = pids();
  if (left.length > 0) throw new Error(`${what} survived SIGKILL: ${left.join(' ')}`);
}

/** Kills the pods' processes (the kubelet must be stopped first, or it restarts them). */
export async function killPods(log: (m: string) => void): Promise<void> {
  await killAndWait(podPids, 'pod processes', log);
}

/**
 * Removes all host state of a node whose processes are stopped: leftover
 * shims, mounts under the state folder, the CNI bridge, kubepods cgroups and
 * what it added to HOST_PATHS. Safe to call when there is nothing to remove.
 * With machineWide false (another tree's node runs) only what lives under
 * stateDir goes: the pods, bridge, cgroups and host paths are that node's now.
 */
export async function cleanupNodeHost(
  stateDir: string,
  log: (m: string) => void,
  machineWide = true,
): Promise<void> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return;
  const p = nodePaths(stateDir);
  // Only a cluster that started a node (its snapshot is written first) has node state to remove.
  if (!fs.existsSync(p.hostSnapshot) && !fs.existsSync(p.dir)) return;
  if (machineWide) await killPods(log);
  await killAndWait(() => shimPids(p), 'containerd shims', log);
  for (let round = 0; round < 5; round++) {
    const mounts = mountsUnder(stateDir);
    if (mounts.length === 0) break;
    if (round === 0) log(`unmounting ${mounts.length} mounts under ${stateDir}`);
    for (const m of mounts) await sh('umount', ['-l', m]);
  }
  const left = mountsUnder(stateDir);
  if (left.length > 0) throw new Error(`cannot unmount: ${left.join(' ')}`);
  if (!machineWide) {
    fs.rmSync(p.hostSnapshot, { force: true });
    return;
  }
  if (bridgeExists()) {
    log(`deleting the CNI bridge ${BRIDGE}`);
    await sh('ip', ['link', 'delete', BRIDGE]);
  }
  const cgroups = kubepodsCgroups();
  if (cgroups.length > 0) log(`removing ${cgroups.length} kubepods cgroups`);
  for (let round = 0; round < 20 && kubepodsCgroups().length > 0; round++) {
    for (const d of kubepodsCgroups()) {
      try {
        fs.rmdirSync(d);
      } catch {
        // busy for a moment after its last process died: next round
      }
    }
    if (kubepodsCgroups().length > 0) await new Promise((r) => setTimeout(r, 100));
  }
  if (fs.existsSync(p.hostSnapshot)) {
    const before = new Set(JSON.parse(fs.readFileSync(p.hostSnapshot, 'utf8')) as string[]);
    const added = hostFiles().filter((f) => !before.has(f));
    // Deepest first, so folders are empty when their turn comes.
    for (const f of added.sort((a, b) => b.length - a.length)) {
      fs.rmSync(f, { recursive: true, force: true });
    }
    fs.rmSync(p.hostSnapshot, { force: true });
  }
}

/** The pids of a process tree's processes still alive, for tests. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { ensureBinaries, type BinaryPaths } from './build';
import { defaultStateDir } from './paths';
import { importImage, writeImageArchive, busyboxImageSpec, sandboxImageSpec } from './images';
import {
  CLUSTER_DNS_IP,
  CLUSTER_DOMAIN,
  COREDNS_USER,
  SERVICE_CIDR,
  SERVICE_FIRST_IP,
  applyObjects,
  corefile,
  dnsObjects,
  ensureBridge,
  kubeProxyConfig,
  natRules,
  recordSysctls,
  removeKubeChains,
  restoreSysctls,
} from './network';
import {
  BRIDGE_IP,
  cleanupNodeHost,
  killPods,
  nodeName,
  nodePaths,
  nodeSupport,
  snapshotHost,
  writeNodeFiles,
} from './node';
import { claimNode, handOverNode, otherLiveOwner, ownerReason, releaseNode } from './node-owner';
import { createCA, createLeaf, createSigningKey } from './pki';
import { freePort } from '../../src/common/wait';

const SA_ISSUER = 'https://kubernetes.default.svc.cluster.local';
/** What a complete control plane runs (sorted). */
const COMPONENTS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'];
const NODE_COMPONENTS = ['containerd', 'kubelet', 'kube-proxy', 'coredns'];

interface ProcessRecord {
  name: string;
  pid: number;
  binary: string;
}

interface State {
  processes: ProcessRecord[];
  kubeconfig: string;
  server: string;
  etcdDataDir: string;
  ports: { etcdClient: number; etcdPeer: number; apiserver: number };
  /** The node, when one was started. */
  node?: { name: string; containerdSock: string; kubeletPort: number };
}

export interface UpOptions {
  stateDir?: string;
  /** Progress lines; defaults to stderr. */
  log?: (msg: string) => void;
  /**
   * Start a node (kubelet + containerd) where the machine allows it (default),
   * or never (false). With CI=true a node that cannot start is an error.
   */
  node?: boolean;
  /** Extra kube-apiserver flags (e.g. the reliability suite turns etcd compaction off). */
  apiserverArgs?: string[];
}

export interface UpResult {
  kubeconfig: string;
  /** True when a healthy control plane from an earlier `up` was reused. */
  reused: boolean;
  stateDir: string;
  binaries: BinaryPaths;
  /** The node's name, when a node runs. */
  node?: string;
  /** Why no node runs, when none does. */
  noNodeReason?: string;
}

const defaultLog = (msg: string): void => {
  process.stderr.write(`[devcluster] ${msg}\n`);
};

function statePath(stateDir: string): string {
  return path.join(stateDir, 'state.json');
}

function readState(stateDir: string): State | undefined {
  try {
    return JSON.parse(fs.readFileSync(statePath(stateDir), 'utf8')) as State;
  } catch {
    return undefined;
  }
}

function writeState(stateDir: string, s: State): void {
  const tmp = `${statePath(stateDir)}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n');
  fs.renameSync(tmp, statePath(stateDir));
}

/** True when pid is alive and still runs the binary we started (guards against PID reuse). */
export function isOurProcess(p: ProcessRecord): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8');
    const stat = fs.readFileSync(`/proc/${p.pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return cmdline.split('\0')[0] === p.binary && state !== 'Z';
  } catch {
    return false;
  }
}

/** etcd data goes to tmpfs when the machine has one; the name is unique per state folder. */
function etcdDataDir(stateDir: string): string {
  const id = createHash('sha256').update(path.resolve(stateDir)).digest('hex').slice(0, 12);
  try {
    fs.accessSync('/dev/shm', fs.constants.W_OK);
    return path.join('/dev/shm', `datakey-operator-${id}`, 'etcd');
  } catch {
    return path.join(stateDir, 'etcd-data');
  }
}

async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

/** GET url as JSON; undefined when the call fails. */
function getJson(url: string, tls: TlsFiles): Promise<unknown> {
  return new Promise((resolve) => {
    const req = https.get(
      url,
      {
        timeout: 3000,
        ca: fs.readFileSync(tls.ca),
        cert: fs.readFileSync(tls.cert),
        key: fs.readFileSync(tls.key),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            resolve(
              res.statusCode === 200 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined,
            );
          } catch {
            resolve(undefined);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

async function nodeReady(server: string, name: string, tls: TlsFiles): Promise<boolean> {
  const node = (await getJson(`${server}/api/v1/nodes/${name}`, tls)) as
    { status?: { conditions?: { type: string; status: string }[] } } | undefined;
  return !!node?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
}

interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/** GET url; resolves with the status code, or 0 when the connection fails. */
function probe(url: string, tls?: TlsFiles): Promise<number> {
  return new Promise((resolve) => {
    const opts: https.RequestOptions = { timeout: 3000 };
    if (tls) {
      opts.ca = fs.readFileSync(tls.ca);
      opts.cert = fs.readFileSync(tls.cert);
      opts.key = fs.readFileSync(tls.key);
    }
    const req = (url.startsWith('https:') ? https : http).get(url, opts, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

function tail(file: string, lines = 40): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

class StartError extends Error {}

interface Started {
  record: ProcessRecord;
  logFile: string;
  exited: () => string | undefined;
}

function startProcess(name: string, binary: string, args: string[], stateDir: string): Started {
  // Webhook and etcd traffic is all on loopback: never send it through a proxy.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(https?|no|all)_proxy$/i.test(k)),
  );
  const logFile = path.join(stateDir, 'logs', `${name}.log`);
  const fd = fs.openSync(logFile, 'a');
  const child = spawn(binary, args, {
    cwd: stateDir,
    detached: true,
    stdio: ['ignore', fd, fd],
    env,
  });
  fs.closeSync(fd);
  let exit: string | undefined;
  child.on('exit', (code, signal) => {
    exit = signal ? `killed by ${signal}` : `exited with code ${code}`;
  });
  child.on('error', (err) => {
    exit = `failed to start: ${err.message}`;
  });
  child.unref();
  if (child.pid === undefined) throw new StartError(`${name}: could not be started`);
  return { record: { name, pid: child.pid, binary }, logFile, exited: () => exit };
}

async function waitFor(
  what: string,
  started: Started,
  timeoutMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const gone = started.exited();
    if (gone) {
      throw new StartError(
        `${started.record.name} ${gone} while waiting for ${what}; last lines of ${started.logFile}:\n` +
          tail(started.logFile),
      );
    }
    if (await check()) return;
    if (Date.now() > deadline) {
      throw new StartError(
        `timed out after ${timeoutMs / 1000}s waiting for ${what}; last lines of ${started.logFile}:\n` +
          tail(started.logFile),
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function kubeconfigYaml(server: string, ca: string, cert: string, key: string): string {
  const b64 = (f: string): string => fs.readFileSync(f).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: datakey-dev',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${b64(ca)}`,
    'users:',
    '- name: datakey-dev-admin',
    '  user:',
    `    client-certificate-data: ${b64(cert)}`,
    `    client-key-data: ${b64(key)}`,
    'contexts:',
    '- name: datakey-dev',
    '  context:',
    '    cluster: datakey-dev',
    '    user: datakey-dev-admin',
    'current-context: datakey-dev',
    '',
  ].join('\n');
}

async function healthy(stateDir: string, s: State): Promise<boolean> {
  const names = s.processes.map((p) => p.name).sort();
  const expected = [...COMPONENTS, ...(s.node ? NODE_COMPONENTS : [])].sort();
  if (names.join() !== expected.join() || !s.processes.every(isOurProcess)) return false;
  const pki = path.join(stateDir, 'pki');
  const tls = {
    ca: path.join(pki, 'ca.crt'),
    cert: path.join(pki, 'admin.crt'),
    key: path.join(pki, 'admin.key'),
  };
  if ((await probe(`${s.server}/readyz`, tls)) !== 200 || !fs.existsSync(s.kubeconfig))
    return false;
  return !s.node || (await nodeReady(s.server, s.node.name, tls));
}

/** Whether to start a node, or the one-line reason why not. */
function decideNode(
  opts: UpOptions,
  stateDir: string,
): { ok: true } | { ok: false; reason: string } {
  if (opts.node === false) return { ok: false, reason: 'no node: --no-node' };
  const support = nodeSupport();
  const other = 'reason' in support ? undefined : otherLiveOwner(stateDir);
  const why = 'reason' in support ? support.reason : other && ownerReason(other);
  if (why) {
    const reason = `no node: ${why}`;
    if (process.env.CI === 'true') {
      throw new Error(`${reason}; with CI=true the local cluster must have a node`);
    }
    return { ok: false, reason };
  }
  return { ok: true };
}

/**
 * With a node, pods reach the API server through the `kubernetes` Service:
 * the lease reconciler publishes the advertised bridge address, and the API
 * server listens on every address (it must keep 127.0.0.1 for the printed
 * kubeconfig, and takes only one bind address). Without a node nothing could
 * use the Service, so it stays on loopback with no endpoint published.
 */
function apiserverAddressArgs(node: boolean): string[] {
  return node
    ? ['--bind-address=0.0.0.0', `--advertise-address=${BRIDGE_IP}`]
    : [
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        '--endpoint-reconciler-type=none',
      ];
}

/**
 * Host preparation for a node, before anything is started: the machine-wide
 * claim (held by this process until the kubelet runs), the records that down()
 * restores from, and the bridge whose address the API server advertises.
 */
async function prepareNodeHost(stateDir: string): Promise<void> {
  const p = nodePaths(stateDir);
  claimNode(stateDir);
  snapshotHost(p);
  recordSysctls(p.sysctls);
  await ensureBridge();
}

/**
 * Starts etcd, kube-apiserver and kube-controller-manager (building them first
 * if the cache lacks them), or reuses a healthy control plane from an earlier call.
 */
export async function up(opts: UpOptions = {}): Promise<UpResult> {
  const stateDir = path.resolve(opts.stateDir ?? defaultStateDir());
  const log = opts.log ?? defaultLog;

  const decision = decideNode(opts, stateDir);
  const existing = readState(stateDir);
  if (existing) {
    if ((existing.node !== undefined) === decision.ok && (await healthy(stateDir, existing))) {
      log(`reusing the running cluster in ${stateDir}`);
      return {
        kubeconfig: existing.kubeconfig,
        reused: true,
        stateDir,
        binaries: await ensureBinaries(),
        node: existing.node?.name,
        noNodeReason: decision.ok ? undefined : decision.reason,
      };
    }
    log(`found an unhealthy or different cluster in ${stateDir}: stopping it first`);
    await down({ stateDir, log });
  } else if (fs.existsSync(stateDir)) {
    // Left by a crash: its mounts must go before its files.
    await down({ stateDir, log });
  }

  const bin = await ensureBinaries();
  const t0 = Date.now();
  const pkiDir = path.join(stateDir, 'pki');
  fs.mkdirSync(path.join(stateDir, 'logs'), { recursive: true });
  fs.mkdirSync(path.join(stateDir, 'run'), { recursive: true });

  log('creating certificates');
  const ca = createCA(pkiDir, 'ca', 'datakey-dev-ca');
  const serving = createLeaf(pkiDir, 'apiserver', ca, {
    commonName: 'kube-apiserver',
    altNames: [
      'IP:127.0.0.1',
      'DNS:localhost',
      `IP:${SERVICE_FIRST_IP}`,
      `IP:${BRIDGE_IP}`,
      'DNS:kubernetes',
      'DNS:kubernetes.default',
      'DNS:kubernetes.default.svc',
      'DNS:kubernetes.default.svc.cluster.local',
    ],
    usage: 'server',
  });
  const admin = createLeaf(pkiDir, 'admin', ca, {
    commonName: 'datakey-dev-admin',
    organizations: ['system:masters'],
    usage: 'client',
  });
  const sa = createSigningKey(pkiDir, 'sa');
  // The API server's identity towards the kubelet (logs, exec, port-forward).
  const kubeletClient = createLeaf(pkiDir, 'apiserver-kubelet-client', ca, {
    commonName: 'kube-apiserver-kubelet-client',
    organizations: ['system:masters'],
    usage: 'client',
  });

  const [etcdClient, etcdPeer, apiPort] = await freePorts(3);
  const server = `https://127.0.0.1:${apiPort}`;
  const kubeconfig = path.join(stateDir, 'kubeconfig');
  fs.writeFileSync(kubeconfig, kubeconfigYaml(server, ca.cert, admin.cert, admin.key), {
    mode: 0o600,
  });
  const dataDir = etcdDataDir(stateDir);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  const state: State = {
    processes: [],
    kubeconfig,
    server,
    etcdDataDir: dataDir,
    ports: { etcdClient, etcdPeer, apiserver: apiPort },
  };
  writeState(stateDir, state);
  const record = (s: Started): void => {
    state.processes.push(s.record);
    writeState(stateDir, state);
  };
  const tls = { ca: ca.cert, cert: admin.cert, key: admin.key };

  try {
    if (decision.ok) await prepareNodeHost(stateDir);
    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const peerUrl = `http://127.0.0.1:${etcdPeer}`;
    log(`starting etcd on ${etcdUrl} (data in ${dataDir})`);
    const etcd = startProcess(
      'etcd',
      bin.etcd,
      [
        '--name=default',
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=default=${peerUrl}`,
        '--unsafe-no-fsync',
        '--log-level=warn',
      ],
      stateDir,
    );
    record(etcd);
    await waitFor(
      'etcd /health',
      etcd,
      30_000,
      async () => (await probe(`${etcdUrl}/health`)) === 200,
    );

    log(`starting kube-apiserver on ${server}`);
    const apiserver = startProcess(
      'kube-apiserver',
      bin['kube-apiserver'],
      [
        `--etcd-servers=${etcdUrl}`,
        ...apiserverAddressArgs(decision.ok),
        `--secure-port=${apiPort}`,
        `--cert-dir=${path.join(stateDir, 'run')}`,
        `--tls-cert-file=${serving.cert}`,
        `--tls-private-key-file=${serving.key}`,
        `--client-ca-file=${ca.cert}`,
        `--kubelet-client-certificate=${kubeletClient.cert}`,
        `--kubelet-client-key=${kubeletClient.key}`,
        '--kubelet-preferred-address-types=Hostname,InternalIP',
        '--authorization-mode=Node,RBAC',
        '--enable-admission-plugins=NodeRestriction',
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
        `--service-account-issuer=${SA_ISSUER}`,
        `--service-account-key-file=${sa.pub}`,
        `--service-account-signing-key-file=${sa.key}`,
        '--allow-privileged=true',
        '--profiling=false',
        ...(opts.apiserverArgs ?? []),
      ],
      stateDir,
    );
    record(apiserver);
    await waitFor(
      'kube-apiserver /readyz',
      apiserver,
      120_000,
      async () => (await probe(`${server}/readyz`, tls)) === 200,
    );
    await waitFor(
      'the default namespace',
      apiserver,
      60_000,
      async () => (await probe(`${server}/api/v1/namespaces/default`, tls)) === 200,
    );

    log('starting kube-controller-manager');
    const kcm = startProcess(
      'kube-controller-manager',
      bin['kube-controller-manager'],
      [
        `--kubeconfig=${kubeconfig}`,
        '--controllers=*',
        '--leader-elect=false',
        '--secure-port=0',
        `--cert-dir=${path.join(stateDir, 'run')}`,
        '--use-service-account-credentials=true',
        `--service-account-private-key-file=${sa.key}`,
        `--root-ca-file=${ca.cert}`,
        `--cluster-signing-cert-file=${ca.cert}`,
        `--cluster-signing-key-file=${ca.key}`,
      ],
      stateDir,
    );
    record(kcm);
    // The service-account controller creating default/default proves the controllers run.
    await waitFor(
      'the default service account (kube-controller-manager)',
      kcm,
      60_000,
      async () =>
        (await probe(`${server}/api/v1/namespaces/default/serviceaccounts/default`, tls)) === 200,
    );

    log('starting kube-scheduler');
    const scheduler = startProcess(
      'kube-scheduler',
      bin['kube-scheduler'],
      [`--kubeconfig=${kubeconfig}`, '--leader-elect=false', '--secure-port=0'],
      stateDir,
    );
    record(scheduler);
    // The scheduler has no health port here (--secure-port=0): give it a moment to fail fast.
    await new Promise((r) => setTimeout(r, 300));
    if (scheduler.exited()) {
      throw new StartError(
        `kube-scheduler ${scheduler.exited()}; last lines of ${scheduler.logFile}:\n${tail(scheduler.logFile)}`,
      );
    }

    if (decision.ok) {
      await startNode({ stateDir, server, bin, ca, tls, state, record, log });
    } else {
      log(decision.reason);
    }
  } catch (err) {
    log(`start failed: stopping what was started (logs kept in ${path.join(stateDir, 'logs')})`);
    await down({ stateDir, log, keepLogs: true });
    throw err;
  }
  log(
    `${state.node ? `cluster with node ${state.node.name}` : 'control plane'} ready in ` +
      `${((Date.now() - t0) / 1000).toFixed(1)}s`,
  );
  return {
    kubeconfig,
    reused: false,
    stateDir,
    binaries: bin,
    node: state.node?.name,
    noNodeReason: decision.ok ? undefined : decision.reason,
  };
}

interface NodeContext {
  stateDir: string;
  server: string;
  bin: BinaryPaths;
  ca: { cert: string; key: string };
  tls: TlsFiles;
  state: State;
  record: (s: Started) => void;
  log: (msg: string) => void;
}

/** Starts containerd with the local images, then the kubelet; waits for the Node to be Ready. */
async function startNode(c: NodeContext): Promise<void> {
  const support = nodeSupport();
  if ('reason' in support) throw new Error(support.reason);
  const { ctr } = support.tools;
  const p = nodePaths(c.stateDir);
  const name = await nodeName();
  const pkiDir = path.join(c.stateDir, 'pki');
  const nodeCert = createLeaf(pkiDir, 'node', c.ca, {
    commonName: `system:node:${name}`,
    organizations: ['system:nodes'],
    usage: 'client',
  });
  const nodeKubeconfig = path.join(c.stateDir, 'node.kubeconfig');
  fs.writeFileSync(
    nodeKubeconfig,
    kubeconfigYaml(c.server, c.ca.cert, nodeCert.cert, nodeCert.key),
    {
      mode: 0o600,
    },
  );
  const [kubeletPort, healthzPort] = await freePorts(2);
  const sandbox = sandboxImageSpec();
  writeNodeFiles(p, {
    sandboxImage: sandbox.name,
    port: kubeletPort,
    healthzPort,
    clientCA: c.ca.cert,
    clusterDNS: CLUSTER_DNS_IP,
    clusterDomain: CLUSTER_DOMAIN,
  });
  c.state.node = { name, containerdSock: p.containerdSock, kubeletPort };
  writeState(c.stateDir, c.state);

  c.log(`starting containerd (state in ${p.dir})`);
  const containerd = startProcess(
    'containerd',
    support.tools.containerd,
    ['--config', p.containerdConfig],
    c.stateDir,
  );
  c.record(containerd);
  const ctrOk = (): Promise<boolean> =>
    new Promise((resolve) => {
      execFile(ctr, ['-a', p.containerdSock, 'version'], { timeout: 5000 }, (err) => resolve(!err));
    });
  await waitFor('containerd', containerd, 30_000, ctrOk);

  for (const spec of [sandbox, busyboxImageSpec()]) {
    const img = writeImageArchive(
      spec,
      path.join(p.imagesDir, `${spec.name.replace(/[/:]/g, '_')}.tar`),
    );
    await importImage(img, { ctr, address: p.containerdSock });
  }

  c.log(`starting kubelet (node ${name}, port ${kubeletPort})`);
  const kubelet = startProcess(
    'kubelet',
    c.bin.kubelet,
    [
      `--config=${p.kubeletConfig}`,
      `--root-dir=${p.kubeletRoot}`,
      `--cert-dir=${p.kubeletCertDir}`,
      `--kubeconfig=${nodeKubeconfig}`,
      `--hostname-override=${name}`,
    ],
    c.stateDir,
  );
  c.record(kubelet);
  handOverNode(c.stateDir, kubelet.record.pid);
  await waitFor(`node ${name} Ready`, kubelet, 120_000, () => nodeReady(c.server, name, c.tls));
  await startKubeProxy(c, name);
  await startCoreDNS(c);
}

/** A client certificate and a kubeconfig for a host component. */
function clientKubeconfig(c: NodeContext, name: string, user: string): string {
  const cert = createLeaf(path.join(c.stateDir, 'pki'), name, c.ca, {
    commonName: user,
    usage: 'client',
  });
  const file = path.join(c.stateDir, `${name}.kubeconfig`);
  fs.writeFileSync(file, kubeconfigYaml(c.server, c.ca.cert, cert.cert, cert.key), { mode: 0o600 });
  return file;
}

/** kube-proxy on the host, in iptables mode; waits until the `kubernetes` Service is programmed. */
async function startKubeProxy(c: NodeContext, node: string): Promise<void> {
  // system:kube-proxy is bound to system:node-proxier by the API server's default RBAC.
  const kubeconfig = clientKubeconfig(c, 'kube-proxy', 'system:kube-proxy');
  const [healthzPort, metricsPort] = await freePorts(2);
  const config = path.join(c.stateDir, 'node', 'kube-proxy.yaml');
  fs.writeFileSync(config, kubeProxyConfig({ kubeconfig, node, healthzPort, metricsPort }));
  c.log('starting kube-proxy (iptables mode)');
  const proxy = startProcess('kube-proxy', c.bin['kube-proxy'], [`--config=${config}`], c.stateDir);
  c.record(proxy);
  // Its rule for the `kubernetes` Service needs the endpoint the lease reconciler publishes.
  await waitFor(`kube-proxy's rule for ${SERVICE_FIRST_IP}`, proxy, 60_000, async () =>
    (await natRules()).includes(`-d ${SERVICE_FIRST_IP}/32`),
  );
}

/** CoreDNS on the host at the bridge address, published as the kube-dns Service. */
async function startCoreDNS(c: NodeContext): Promise<void> {
  const kubeconfig = clientKubeconfig(c, 'coredns', COREDNS_USER);
  await applyObjects(c.bin.kubectl, path.join(c.stateDir, 'kubeconfig'), dnsObjects());
  const [healthPort, readyPort] = await freePorts(2);
  const config = path.join(c.stateDir, 'node', 'Corefile');
  fs.writeFileSync(config, corefile({ kubeconfig, healthPort, readyPort }));
  c.log(`starting CoreDNS on ${BRIDGE_IP}:53 (Service ${CLUSTER_DNS_IP})`);
  const dns = startProcess('coredns', c.bin.coredns, ['-conf', config], c.stateDir);
  c.record(dns);
  await waitFor(
    'CoreDNS /ready',
    dns,
    60_000,
    async () => (await probe(`http://127.0.0.1:${readyPort}/ready`)) === 200,
  );
}

export interface DownOptions {
  stateDir?: string;
  log?: (msg: string) => void;
  /** Keep the logs folder (used after a failed start). */
  keepLogs?: boolean;
}

async function stopProcess(p: ProcessRecord, log: (m: string) => void): Promise<void> {
  if (!isOurProcess(p)) return;
  log(`stopping ${p.name} (pid ${p.pid})`);
  const waitGone = async (ms: number): Promise<boolean> => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (!isOurProcess(p)) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return !isOurProcess(p);
  };
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitGone(15_000)) return;
  log(`${p.name} (pid ${p.pid}) ignored SIGTERM for 15s: sending SIGKILL`);
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    return;
  }
  if (!(await waitGone(5_000))) throw new Error(`${p.name} (pid ${p.pid}) survived SIGKILL`);
}

/**
 * What kube-proxy and the kubelet changed on the host, once they are stopped:
 * their iptables chains, and the sysctls recorded before the node started.
 */
async function cleanupServiceNetwork(stateDir: string, log: (m: string) => void): Promise<void> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return;
  const p = nodePaths(stateDir);
  if (!fs.existsSync(p.hostSnapshot) && !fs.existsSync(p.sysctls) && !fs.existsSync(p.dir)) return;
  await removeKubeChains(log);
  restoreSysctls(p.sysctls, log);
}

/** Stops every process recorded in the state folder (last started first) and removes the state. */
export async function down(opts: DownOptions = {}): Promise<void> {
  const stateDir = path.resolve(opts.stateDir ?? defaultStateDir());
  const log = opts.log ?? defaultLog;
  const s = readState(stateDir);
  if (!s && !fs.existsSync(stateDir)) log(`no control plane state in ${stateDir}: nothing to stop`);
  // The pods, bridge and cgroups of another tree's live node are not ours to remove.
  const other = otherLiveOwner(stateDir);
  if (other) log(`leaving the machine's node alone: ${ownerReason(other)}`);
  if (s) {
    for (const p of [...s.processes].reverse()) {
      await stopProcess(p, log);
      // With the kubelet gone nothing restarts the pods: stop them before containerd.
      if (p.name === 'kubelet' && !other) await killPods(log);
    }
    if (s.etcdDataDir.startsWith('/dev/shm/')) {
      fs.rmSync(path.dirname(s.etcdDataDir), { recursive: true, force: true });
    } else {
      fs.rmSync(s.etcdDataDir, { recursive: true, force: true });
    }
  }
  if (!other) await cleanupServiceNetwork(stateDir, log);
  await cleanupNodeHost(stateDir, log, !other);
  releaseNode(stateDir);
  if (opts.keepLogs) {
    for (const entry of fs.existsSync(stateDir) ? fs.readdirSync(stateDir) : []) {
      if (entry !== 'logs') fs.rmSync(path.join(stateDir, entry), { recursive: true, force: true });
    }
  } else {
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------ fault injection

/** True once pid is a zombie or gone: every file and socket it held is closed. */
function exitedCompletely(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

/** The live, verified process of a component of the control plane in `stateDir`. */
export function componentProcess(stateDir: string, name: string): ProcessRecord {
  const s = readState(path.resolve(stateDir));
  const p = s?.processes.find((r) => r.name === name);
  if (!p || !isOurProcess(p)) throw new Error(`no live ${name} of the cluster in ${stateDir}`);
  return p;
}

/** True when 127.0.0.1:port can be bound now (as the component binds it, SO_REUSEADDR). */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export interface RestartOptions {
  /** The flags of the new process, from the old one's (default: the same). */
  args?: (old: string[]) => string[];
}

/** How long a restart may take, from the kill until the component serves again. */
const RESTART_TIMEOUT_MS = 120_000;

/**
 * kill -9 of one control-plane component (etcd or kube-apiserver) and a start
 * of the same binary with the same flags (or `options.args` of them), recorded
 * in the state so that down() stops the new process; waits until it serves
 * again. While the component is away its clients reconnect in a loop, and one
 * of them can be given its very port as the local end of a connection: the
 * port is then busy for a moment. The restart waits for the port, and starts
 * again when the new process still lost the race for it.
 */
export async function restartComponent(
  stateDir: string,
  name: 'etcd' | 'kube-apiserver',
  options: RestartOptions = {},
): Promise<void> {
  const dir = path.resolve(stateDir);
  const s = readState(dir);
  const old = componentProcess(dir, name);
  if (!s) throw new Error(`no cluster state in ${dir}`);
  const oldArgs = fs.readFileSync(`/proc/${old.pid}/cmdline`, 'utf8').split('\0').slice(1, -1);
  const args = options.args ? options.args(oldArgs) : oldArgs;
  process.kill(old.pid, 'SIGKILL');
  const deadline = Date.now() + RESTART_TIMEOUT_MS;
  // Not only no longer "ours" (its cmdline empties early in exit): gone, its ports closed.
  while (!exitedCompletely(old.pid)) {
    if (Date.now() > deadline) throw new Error(`${name} (pid ${old.pid}) did not exit on SIGKILL`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const ports = name === 'etcd' ? [s.ports.etcdClient, s.ports.etcdPeer] : [s.ports.apiserver];
  const pki = path.join(dir, 'pki');
  const tls = {
    ca: path.join(pki, 'ca.crt'),
    cert: path.join(pki, 'admin.crt'),
    key: path.join(pki, 'admin.key'),
  };
  const url =
    name === 'etcd' ? `http://127.0.0.1:${s.ports.etcdClient}/health` : `${s.server}/readyz`;
  for (;;) {
    for (const port of ports) {
      while (!(await portFree(port))) {
        if (Date.now() > deadline) throw new Error(`${name}: port ${port} stayed in use`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const logFile = path.join(dir, 'logs', `${name}.log`);
    const logged = fs.existsSync(logFile) ? fs.statSync(logFile).size : 0;
    const started = startProcess(name, old.binary, args, dir);
    s.processes = s.processes.map((p) => (p.name === name ? started.record : p));
    writeState(dir, s);
    try {
      await waitFor(
        `${name} to serve again`,
        started,
        Math.max(1000, deadline - Date.now()),
        async () => (await probe(url, name === 'etcd' ? undefined : tls)) === 200,
      );
      return;
    } catch (err) {
      const lostPort =
        started.exited() !== undefined &&
        /address already in use/.test(fs.readFileSync(logFile).subarray(logged).toString('utf8'));
      if (!lostPort || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

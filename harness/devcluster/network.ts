// The node's Service network: the bridge made before anything needs its
// address, kube-proxy's and CoreDNS's configuration, the objects that publish
// the cluster DNS, and the removal of the host state they change (iptables
// chains, sysctls). The processes themselves are started by cluster.ts.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { BRIDGE, BRIDGE_IP, POD_CIDR, onPath } from './node';

/** The Service range; its first address is the `kubernetes` Service's ClusterIP. */
export const SERVICE_CIDR = '10.0.0.0/24';
export const SERVICE_FIRST_IP = '10.0.0.1';
/** In the lower, statically assigned part of SERVICE_CIDR, as kubeadm does. */
export const CLUSTER_DNS_IP = '10.0.0.10';
export const CLUSTER_DOMAIN = 'cluster.local';
/** The identity CoreDNS lists Services and EndpointSlices with (bound by dnsObjects). */
export const COREDNS_USER = 'system:coredns';

/**
 * Host settings that the node changes: kube-proxy's (route_localnet, conntrack
 * limits and timeouts, though its config here asks it to leave them) and the
 * bridge plugin's ip_forward. Recorded before the node starts, restored by down.
 */
export const NODE_SYSCTLS = [
  'net/ipv4/conf/all/route_localnet',
  'net/ipv4/ip_forward',
  'net/netfilter/nf_conntrack_max',
  'net/netfilter/nf_conntrack_tcp_timeout_established',
  'net/netfilter/nf_conntrack_tcp_timeout_close_wait',
];

function run(file: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
    // A tool that exits without reading its stdin must not crash us with EPIPE: its exit status tells.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
  });
}

function tool(name: string): string {
  const p = onPath(name);
  if (!p) throw new Error(`${name} not found (apt-get install iproute2 iptables)`);
  return p;
}

/**
 * Creates the CNI bridge with its gateway address now, not when the first pod
 * starts, so that CoreDNS can bind it and the API server can advertise it from
 * the start; the bridge plugin adopts an existing bridge. The route keeps
 * ClusterIP traffic on the bridge whatever kube-proxy has programmed yet: it
 * never takes the default route off the machine.
 */
export async function ensureBridge(): Promise<void> {
  const ip = tool('ip');
  if (!fs.existsSync(`/sys/class/net/${BRIDGE}`)) {
    await run(ip, ['link', 'add', BRIDGE, 'type', 'bridge']);
  }
  const prefix = POD_CIDR.split('/')[1];
  const addrs = await run(ip, ['-4', '-o', 'addr', 'show', 'dev', BRIDGE]);
  if (!addrs.includes(` ${BRIDGE_IP}/`)) {
    await run(ip, ['addr', 'add', `${BRIDGE_IP}/${prefix}`, 'dev', BRIDGE]);
  }
  await run(ip, ['link', 'set', BRIDGE, 'up']);
  await run(ip, ['route', 'replace', SERVICE_CIDR, 'dev', BRIDGE, 'src', BRIDGE_IP]);
}

export function readSysctls(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of NODE_SYSCTLS) {
    try {
      out[k] = fs.readFileSync(`/proc/sys/${k}`, 'utf8').trim();
    } catch {
      // not on this kernel (e.g. nf_conntrack not loaded yet): nothing to restore
    }
  }
  return out;
}

/** Records the sysctls unless a record exists (a crashed run's record holds the originals). */
export function recordSysctls(file: string): void {
  if (!fs.existsSync(file)) fs.writeFileSync(file, JSON.stringify(readSysctls()) + '\n');
}

/** Writes back the recorded values that changed; removes the record. */
export function restoreSysctls(file: string, log: (m: string) => void): void {
  if (!fs.existsSync(file)) return;
  const before = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, string>;
  const now = readSysctls();
  for (const [k, v] of Object.entries(before)) {
    if (now[k] === undefined || now[k] === v) continue;
    log(`restoring ${k.replace(/\//g, '.')} = ${v} (was ${now[k]})`);
    fs.writeFileSync(`/proc/sys/${k}`, v);
  }
  fs.rmSync(file, { force: true });
}

const TABLES = ['filter', 'nat', 'mangle', 'raw'];
const FAMILIES = [
  { save: 'iptables-save', restore: 'iptables-restore' },
  { save: 'ip6tables-save', restore: 'ip6tables-restore' },
];

/** `iptables-save` of one table ('' when the tool or the table is missing). */
async function saveTable(save: string, table: string): Promise<string> {
  const bin = onPath(save);
  return bin ? run(bin, ['-t', table]).catch(() => '') : '';
}

/** The KUBE-* chains of a table dump. */
function kubeChains(dump: string): string[] {
  return [...dump.matchAll(/^:(KUBE-\S+)/gm)].map((m) => m[1]);
}

/** Every KUBE-* chain on the host, as `<tool> <table> <chain>`. */
export async function kubeChainsLeft(): Promise<string[]> {
  const out: string[] = [];
  for (const f of FAMILIES) {
    for (const t of TABLES) {
      for (const c of kubeChains(await saveTable(f.save, t))) out.push(`${f.save} ${t} ${c}`);
    }
  }
  return out;
}

/** An iptables-restore --noflush script that removes the KUBE-* chains and the jumps to them. */
export function removalScript(table: string, dump: string): string | undefined {
  const chains = kubeChains(dump);
  if (chains.length === 0) return undefined;
  const jumps = dump
    .split('\n')
    .filter((l) => /^-A /.test(l) && !/^-A KUBE-/.test(l) && /\s-[jg] KUBE-/.test(l))
    .map((l) => `-D ${l.slice(3)}`);
  const flush = chains.map((c) => `-F ${c}`);
  const remove = chains.map((c) => `-X ${c}`);
  return [`*${table}`, ...jumps, ...flush, ...remove, 'COMMIT', ''].join('\n');
}

/**
 * Removes every KUBE-* chain: kube-proxy's Service rules and the kubelet's
 * KUBE-FIREWALL/KUBE-KUBELET-CANARY/KUBE-IPTABLES-HINT. Only called when the
 * machine's one node (see node-owner.ts) was ours and is stopped, so every
 * such chain is ours. This is what `kube-proxy --cleanup` does for its own
 * chains, without needing its binary after a crash.
 */
export async function removeKubeChains(log: (m: string) => void): Promise<void> {
  for (const f of FAMILIES) {
    const restore = onPath(f.restore);
    if (!restore) continue;
    for (const t of TABLES) {
      const script = removalScript(t, await saveTable(f.save, t));
      if (!script) continue;
      log(`removing the KUBE-* chains of ${f.save.replace('-save', '')} table ${t}`);
      await run(restore, ['--noflush'], script);
    }
  }
}

export function kubeProxyConfig(o: {
  kubeconfig: string;
  node: string;
  healthzPort: number;
  metricsPort: number;
}): string {
  return [
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
    'kind: KubeProxyConfiguration',
    'mode: iptables',
    `clientConnection: {kubeconfig: ${JSON.stringify(o.kubeconfig)}}`,
    `hostnameOverride: ${o.node}`,
    `clusterCIDR: ${POD_CIDR}`,
    // Traffic from the pod range is local; anything else reaching a ClusterIP is masqueraded.
    'detectLocalMode: ClusterCIDR',
    `healthzBindAddress: 127.0.0.1:${o.healthzPort}`,
    `metricsBindAddress: 127.0.0.1:${o.metricsPort}`,
    // Leave the host's conntrack limits and timeouts as they are (0 = do not set).
    'conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}',
    // No NodePorts on 127.0.0.1: they would need route_localnet=1 on the whole host.
    'iptables: {localhostNodePorts: false}',
    '',
  ].join('\n');
}

/**
 * Serves cluster.local and the reverse zones from the API server; any other
 * name is NXDOMAIN at once (there is no upstream to forward to, and without an
 * answer clients would wait for SERVFAIL or a timeout).
 */
export function corefile(o: { kubeconfig: string; healthPort: number; readyPort: number }): string {
  return [
    `${CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {`,
    `    bind ${BRIDGE_IP}`,
    '    errors',
    `    health 127.0.0.1:${o.healthPort}`,
    `    ready 127.0.0.1:${o.readyPort}`,
    `    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {`,
    `        kubeconfig ${o.kubeconfig}`,
    '        pods insecure',
    '        ttl 30',
    '    }',
    '    cache 30',
    '}',
    '.:53 {',
    `    bind ${BRIDGE_IP}`,
    '    errors',
    '    template ANY ANY {',
    '        rcode NXDOMAIN',
    '    }',
    '}',
    '',
  ].join('\n');
}

/**
 * RBAC for CoreDNS, and the kube-dns Service without selector whose one
 * endpoint is CoreDNS on the bridge address (it runs on the host, not in a pod).
 */
export function dnsObjects(): object {
  const ports = [
    { name: 'dns', protocol: 'UDP', port: 53 },
    { name: 'dns-tcp', protocol: 'TCP', port: 53 },
  ];
  const labels = { 'k8s-app': 'kube-dns' };
  return {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRole',
        metadata: { name: COREDNS_USER },
        rules: [
          {
            apiGroups: [''],
            resources: ['endpoints', 'services', 'pods', 'namespaces'],
            verbs: ['list', 'watch'],
          },
          {
            apiGroups: ['discovery.k8s.io'],
            resources: ['endpointslices'],
            verbs: ['list', 'watch'],
          },
        ],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRoleBinding',
        metadata: { name: COREDNS_USER },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: COREDNS_USER },
        subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: COREDNS_USER }],
      },
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'kube-dns', namespace: 'kube-system', labels },
        spec: { clusterIP: CLUSTER_DNS_IP, ports: ports.map((p) => ({ ...p, targetPort: 53 })) },
      },
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: {
          name: 'kube-dns-host',
          namespace: 'kube-system',
          labels: {
            ...labels,
            'kubernetes.io/service-name': 'kube-dns',
            // Not the EndpointSlice controller's: it leaves this slice alone.
            'endpointslice.kubernetes.io/managed-by': 'devcluster.datakey.local',
          },
        },
        addressType: 'IPv4',
        endpoints: [{ addresses: [BRIDGE_IP], conditions: { ready: true } }],
        ports,
      },
    ],
  };
}

/** The host's IPv4 nat table as iptables-save prints it. */
export function natRules(): Promise<string> {
  return saveTable('iptables-save', 'nat');
}

/** `kubectl apply` of objects (a List) with the admin kubeconfig. */
export async function applyObjects(
  kubectl: string,
  kubeconfig: string,
  objects: object,
): Promise<void> {
  await run(kubectl, ['--kubeconfig', kubeconfig, 'apply', '-f', '-'], JSON.stringify(objects));
}

import * as yaml from 'yaml';
import {
  CLUSTER_DNS_IP,
  corefile,
  dnsObjects,
  kubeProxyConfig,
  removalScript,
  SERVICE_CIDR,
} from '../../harness/devcluster/network';
import { BRIDGE_IP, POD_CIDR } from '../../harness/devcluster/node';

describe('the node service network configuration', () => {
  test('kube-proxy: iptables mode, pod range local, loopback ports, host settings left alone', () => {
    const cfg = yaml.parse(
      kubeProxyConfig({
        kubeconfig: '/s/kp.kubeconfig',
        node: 'n1',
        healthzPort: 1,
        metricsPort: 2,
      }),
    ) as Record<string, unknown>;
    expect(cfg).toMatchObject({
      kind: 'KubeProxyConfiguration',
      mode: 'iptables',
      clusterCIDR: POD_CIDR,
      hostnameOverride: 'n1',
      detectLocalMode: 'ClusterCIDR',
      healthzBindAddress: '127.0.0.1:1',
      metricsBindAddress: '127.0.0.1:2',
      clientConnection: { kubeconfig: '/s/kp.kubeconfig' },
      conntrack: { maxPerCore: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
      iptables: { localhostNodePorts: false },
    });
  });

  test('Corefile: cluster and reverse zones from the API server on the bridge, NXDOMAIN for the rest', () => {
    const c = corefile({ kubeconfig: '/s/dns.kubeconfig', healthPort: 3, readyPort: 4 });
    expect(c).toMatch(/^cluster\.local:53 in-addr\.arpa:53 ip6\.arpa:53 \{$/m);
    expect(c).toContain('kubernetes cluster.local in-addr.arpa ip6.arpa {');
    expect(c).toContain('kubeconfig /s/dns.kubeconfig');
    expect(c).toContain('health 127.0.0.1:3');
    expect(c).toContain('ready 127.0.0.1:4');
    expect(c.match(new RegExp(`bind ${BRIDGE_IP.replace(/\./g, '\\.')}$`, 'gm'))).toHaveLength(2);
    expect(c).toMatch(/^\.:53 \{\n(.*\n)*\s+template ANY ANY \{\n\s+rcode NXDOMAIN/m);
  });

  test('kube-dns: a Service without selector at the DNS IP, its one endpoint the bridge address', () => {
    interface Obj {
      kind: string;
      spec?: unknown;
      metadata: { labels?: Record<string, string> };
      endpoints?: unknown;
      subjects?: unknown;
    }
    const { items } = dnsObjects() as { items: Obj[] };
    const svc = items.find((o) => o.kind === 'Service')!;
    expect(SERVICE_CIDR).toBe('10.0.0.0/24');
    expect(svc.spec).toEqual({
      clusterIP: CLUSTER_DNS_IP,
      ports: [
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 },
        { name: 'dns-tcp', protocol: 'TCP', port: 53, targetPort: 53 },
      ],
    });
    const slice = items.find((o) => o.kind === 'EndpointSlice')!;
    expect(slice.metadata.labels?.['kubernetes.io/service-name']).toBe('kube-dns');
    expect(slice.endpoints).toEqual([{ addresses: [BRIDGE_IP], conditions: { ready: true } }]);
    const binding = items.find((o) => o.kind === 'ClusterRoleBinding')!;
    expect(binding.subjects).toEqual([
      { apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'system:coredns' },
    ]);
  });

  test('the iptables removal script drops the jumps into KUBE-* chains, then the chains', () => {
    const dump = [
      '*filter',
      ':INPUT ACCEPT [0:0]',
      ':KUBE-FIREWALL - [0:0]',
      ':KUBE-SERVICES - [0:0]',
      ':OTHER - [0:0]',
      '-A INPUT -j KUBE-FIREWALL',
      '-A INPUT -s 1.2.3.4/32 -j ACCEPT',
      '-A OTHER -m comment --comment "to kube" -g KUBE-SERVICES',
      '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block x" -j DROP',
      'COMMIT',
    ].join('\n');
    expect(removalScript('filter', dump)).toBe(
      [
        '*filter',
        '-D INPUT -j KUBE-FIREWALL',
        '-D OTHER -m comment --comment "to kube" -g KUBE-SERVICES',
        '-F KUBE-FIREWALL',
        '-F KUBE-SERVICES',
        '-X KUBE-FIREWALL',
        '-X KUBE-SERVICES',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(removalScript('nat', '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n')).toBeUndefined();
  });
});

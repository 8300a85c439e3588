import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readVersions } from '../../harness/devcluster/build';
import { toolsDir } from '../../harness/devcluster/paths';
import { createCA, createLeaf, createSigningKey } from '../../harness/devcluster/pki';

const gomod = (m: string): string => fs.readFileSync(path.join(toolsDir, m, 'go.mod'), 'utf8');

describe('tools/controlplane Go modules', () => {
  const v = readVersions();

  test('kubernetes: pinned, with replaces for the staging modules only', () => {
    const mod = gomod('kubernetes');
    expect(mod).toMatch(
      new RegExp(
        `^(require )?\\s*k8s\\.io/kubernetes ${v.kubernetes.replace(/\./g, '\\.')}\\b`,
        'm',
      ),
    );
    const staging = `v0.${v.kubernetes.slice('v1.'.length)}`;
    const replaces = [...mod.matchAll(/^\s*(k8s\.io\/\S+) => (k8s\.io\/\S+) (\S+)$/gm)];
    expect(replaces.length).toBeGreaterThan(20);
    for (const [, from, to, version] of replaces) {
      expect(to).toBe(from);
      expect(version).toBe(staging);
    }
    const replaced = replaces.map((r) => r[1]);
    for (const real of ['k8s.io/utils', 'k8s.io/kube-openapi', 'k8s.io/json'])
      expect(replaced).not.toContain(real);
    for (const cmd of [
      'kube-apiserver',
      'kube-controller-manager',
      'kube-scheduler',
      'kubelet',
      'kube-proxy',
      'kubectl',
    ]) {
      expect(mod).toMatch(new RegExp(`^\\s*(tool )?k8s\\.io/kubernetes/cmd/${cmd}$`, 'm'));
    }
  });

  test('etcd, helm 3, helm 4 and coredns: modules of their own at the pinned versions', () => {
    expect(gomod('etcd')).toContain(`go.etcd.io/etcd/server/v3 ${v.etcd}`);
    expect(gomod('helm')).toContain(`helm.sh/helm/v3 ${v.helm}`);
    expect(gomod('helm4')).toContain(`helm.sh/helm/v4 ${v.helm4}`);
    expect(gomod('helm4')).toMatch(/^\s*(tool )?helm\.sh\/helm\/v4\/cmd\/helm$/m);
    expect(gomod('coredns')).toMatch(/^tool github\.com\/coredns\/coredns$/m);
    expect(gomod('coredns')).toContain(`github.com/coredns/coredns ${v.coredns}`);
    for (const m of ['kubernetes', 'etcd', 'helm', 'helm4', 'coredns']) {
      expect(fs.existsSync(path.join(toolsDir, m, 'go.sum'))).toBe(true);
    }
  });
});

describe('dev cluster PKI', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'datakey-pki-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('serving and admin certificates chain to the CA with the right names', () => {
    const ca = createCA(dir, 'ca', 'test-ca');
    const caCert = new X509Certificate(fs.readFileSync(ca.cert));
    expect(caCert.ca).toBe(true);

    const serving = createLeaf(dir, 'srv', ca, {
      commonName: 'kube-apiserver',
      altNames: ['IP:127.0.0.1', 'DNS:localhost', 'IP:10.0.0.1'],
      usage: 'server',
    });
    const s = new X509Certificate(fs.readFileSync(serving.cert));
    expect(s.verify(caCert.publicKey)).toBe(true);
    expect(s.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(s.checkIP('10.0.0.1')).toBe('10.0.0.1');
    expect(s.checkHost('localhost')).toBe('localhost');
    expect(s.checkIP('10.0.0.2')).toBeUndefined();

    const admin = createLeaf(dir, 'admin', ca, {
      commonName: 'admin',
      organizations: ['system:masters'],
      usage: 'client',
    });
    const a = new X509Certificate(fs.readFileSync(admin.cert));
    expect(a.verify(caCert.publicKey)).toBe(true);
    expect(a.subject).toContain('O=system:masters');
    expect(a.subject).toContain('CN=admin');
  });

  test('service-account signing key pair', () => {
    const k = createSigningKey(dir, 'sa');
    expect(fs.readFileSync(k.key, 'utf8')).toContain('PRIVATE KEY');
    expect(fs.readFileSync(k.pub, 'utf8')).toContain('BEGIN PUBLIC KEY');
  });
});

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cacheRoot, toolsDir } from './paths';

/** Pinned versions, from tools/controlplane/versions.json. */
export interface Versions {
  kubernetes: string;
  etcd: string;
  helm: string;
  /** Helm 4, built next to helm 3 so the chart is checked with both majors. */
  helm4: string;
  coredns: string;
}

export function readVersions(): Versions {
  const raw = JSON.parse(fs.readFileSync(path.join(toolsDir, 'versions.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const get = (k: keyof Versions): string => {
    const v = raw[k];
    if (typeof v !== 'string' || !/^v\d+\.\d+\.\d+$/.test(v)) {
      throw new Error(`tools/controlplane/versions.json: bad or missing "${k}"`);
    }
    return v;
  };
  return {
    kubernetes: get('kubernetes'),
    etcd: get('etcd'),
    helm: get('helm'),
    helm4: get('helm4'),
    coredns: get('coredns'),
  };
}

interface Binary {
  /** File name in the component's bin/ folder. */
  name: string;
  pkg: string;
  /** Key in BinaryPaths when it differs from the file name (helm 4 is a `helm` too). */
  key?: BinaryName;
}

interface Component {
  /** Folder under tools/controlplane holding go.mod/go.sum. */
  module: string;
  version: string;
  ldflags: string[];
  binaries: Binary[];
}

/** Every binary the dev cluster needs, by name. */
export type BinaryName =
  | 'kube-apiserver'
  | 'kube-controller-manager'
  | 'kube-scheduler'
  | 'kubelet'
  | 'kube-proxy'
  | 'kubectl'
  | 'etcd'
  | 'helm'
  | 'helm4'
  | 'coredns';
export type BinaryPaths = Record<BinaryName, string>;

function majorMinor(version: string): [string, string] {
  const m = /^v(\d+)\.(\d+)\./.exec(version);
  if (!m) throw new Error(`not a version: ${version}`);
  return [m[1], m[2]];
}

/** The Kubernetes minor that helm's own client-go corresponds to (v0.37.x → 1.37). */
function helmKubeVersion(): [string, string] {
  const gomod = fs.readFileSync(path.join(toolsDir, 'helm', 'go.mod'), 'utf8');
  const m = /^\s*k8s\.io\/client-go v0\.(\d+)\./m.exec(gomod);
  return m ? ['1', m[1]] : ['1', '20'];
}

function components(v: Versions): Component[] {
  const [kMajor, kMinor] = majorMinor(v.kubernetes);
  const [hkMajor, hkMinor] = helmKubeVersion();
  const helmVersion = 'helm.sh/helm/v3/internal/version';
  return [
    {
      module: 'kubernetes',
      version: v.kubernetes,
      ldflags: [
        `-X k8s.io/component-base/version.gitVersion=${v.kubernetes}`,
        `-X k8s.io/component-base/version.gitMajor=${kMajor}`,
        `-X k8s.io/component-base/version.gitMinor=${kMinor}`,
        `-X k8s.io/component-base/version.gitTreeState=clean`,
      ],
      binaries: [
        { name: 'kube-apiserver', pkg: 'k8s.io/kubernetes/cmd/kube-apiserver' },
        { name: 'kube-controller-manager', pkg: 'k8s.io/kubernetes/cmd/kube-controller-manager' },
        { name: 'kube-scheduler', pkg: 'k8s.io/kubernetes/cmd/kube-scheduler' },
        { name: 'kubelet', pkg: 'k8s.io/kubernetes/cmd/kubelet' },
        { name: 'kube-proxy', pkg: 'k8s.io/kubernetes/cmd/kube-proxy' },
        { name: 'kubectl', pkg: 'k8s.io/kubernetes/cmd/kubectl' },
      ],
    },
    {
      module: 'etcd',
      version: v.etcd,
      ldflags: [],
      binaries: [{ name: 'etcd', pkg: 'go.etcd.io/etcd/server/v3' }],
    },
    {
      module: 'helm',
      version: v.helm,
      ldflags: [
        `-X ${helmVersion}.version=${v.helm}`,
        `-X ${helmVersion}.gitTreeState=clean`,
        `-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${hkMajor}`,
        `-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${hkMinor}`,
        `-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${hkMajor}`,
        `-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${hkMinor}`,
      ],
      binaries: [{ name: 'helm', pkg: 'helm.sh/helm/v3/cmd/helm' }],
    },
    {
      // Helm 4 derives the Kubernetes version it lints against from the
      // client-go it is built with: only its own version needs stamping.
      module: 'helm4',
      version: v.helm4,
      ldflags: [
        `-X helm.sh/helm/v4/internal/version.version=${v.helm4}`,
        `-X helm.sh/helm/v4/internal/version.gitTreeState=clean`,
      ],
      binaries: [{ name: 'helm', pkg: 'helm.sh/helm/v4/cmd/helm', key: 'helm4' }],
    },
    {
      // The cluster DNS; its version is a constant of its source, no ldflags needed.
      module: 'coredns',
      version: v.coredns,
      ldflags: [],
      binaries: [{ name: 'coredns', pkg: 'github.com/coredns/coredns' }],
    },
  ];
}

/**
 * What the binaries were built from: a change of any of it triggers a rebuild.
 * The list of binaries is not part of it: adding one builds only that one.
 */
function stampOf(c: Component): string {
  const h = createHash('sha256');
  for (const f of ['go.mod', 'go.sum']) h.update(fs.readFileSync(path.join(toolsDir, c.module, f)));
  h.update(JSON.stringify({ module: c.module, version: c.version, ldflags: c.ldflags }));
  return h.digest('hex');
}

/**
 * `<module>-<version>-<stamp prefix>/bin`: work trees whose module files differ
 * (a branch that adds a binary, say) build into folders of their own instead of
 * rebuilding each other's binaries in turn.
 */
function binDir(c: Component, stamp: string): string {
  return path.join(cacheRoot(), `${c.module}-${c.version}-${stamp.slice(0, 12)}`, 'bin');
}

function log(msg: string): void {
  process.stderr.write(`[devcluster] ${msg}\n`);
}

function fmtSeconds(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function goBuild(c: Component, b: Binary, out: string): Promise<void> {
  const args = [
    'build',
    '-trimpath',
    '-ldflags',
    ['-s', '-w', ...c.ldflags].join(' '),
    '-o',
    out,
    b.pkg,
  ];
  const env = {
    ...process.env,
    GOTOOLCHAIN: 'local',
    CGO_ENABLED: '0',
    // Build exactly what go.mod/go.sum pin: never resolve or upgrade modules here.
    GOFLAGS: '-mod=readonly -buildvcs=false',
  };
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('go', args, {
      cwd: path.join(toolsDir, c.module),
      env,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const tick = setInterval(
      () => log(`  still building ${b.name} (${fmtSeconds(Date.now() - started)} elapsed)`),
      30_000,
    );
    child.on('error', (err) => {
      clearInterval(tick);
      reject(
        new Error(`cannot run "go" (is Go installed and on PATH?): ${(err as Error).message}`),
      );
    });
    child.on('exit', (code, signal) => {
      clearInterval(tick);
      if (code === 0) {
        log(`  built ${b.name} in ${fmtSeconds(Date.now() - started)}`);
        resolve();
      } else {
        reject(
          new Error(
            `go build ${b.pkg} failed (${signal ?? `exit ${code}`}); cwd ${path.join(toolsDir, c.module)}`,
          ),
        );
      }
    });
  });
}

const keyOf = (b: Binary): BinaryName => b.key ?? (b.name as BinaryName);

/**
 * Returns the paths of all binaries, building those missing from the cache.
 * A cold build takes ~11 minutes on 2 cores; a warm call returns at once.
 */
export async function ensureBinaries(): Promise<BinaryPaths> {
  return (await ensureComponents(() => true)) as BinaryPaths;
}

/**
 * Helm 3 and helm 4 only: the chart's unit tests need them, not a cold
 * Kubernetes build (helm 4 alone built in 3.5 minutes on a busy 2-core machine).
 */
export async function ensureHelm(): Promise<Pick<BinaryPaths, 'helm' | 'helm4'>> {
  const r = await ensureComponents((c) => c.module.startsWith('helm'));
  if (!r.helm || !r.helm4) throw new Error('helm components missing from the build list');
  return { helm: r.helm, helm4: r.helm4 };
}

async function ensureComponents(wanted: (c: Component) => boolean): Promise<Partial<BinaryPaths>> {
  const result: Partial<BinaryPaths> = {};
  for (const c of components(readVersions()).filter(wanted)) {
    const stamp = stampOf(c);
    const dir = binDir(c, stamp);
    const stampFile = path.join(dir, '.stamp');
    const current = fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8').trim() === stamp;
    const missing = c.binaries.filter((b) => !current || !fs.existsSync(path.join(dir, b.name)));
    if (missing.length > 0) {
      log(
        `building ${missing.map((b) => b.name).join(', ')} ${c.version} into ${dir} ` +
          `(cold: several minutes; progress every 30s)`,
      );
      fs.mkdirSync(dir, { recursive: true });
      if (!current) fs.rmSync(stampFile, { force: true });
      for (const b of missing) {
        const tmp = path.join(dir, `.${b.name}.tmp-${process.pid}`);
        try {
          await goBuild(c, b, tmp);
          fs.renameSync(tmp, path.join(dir, b.name));
        } finally {
          fs.rmSync(tmp, { force: true });
        }
      }
      fs.writeFileSync(stampFile, `${stamp}\n`);
    }
    for (const b of c.binaries) result[keyOf(b)] = path.join(dir, b.name);
  }
  return result as BinaryPaths;
}

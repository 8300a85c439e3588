import { spawn, spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ensureHelm } from '../../harness/devcluster/build';

/**
 * The real helm 3 and helm 4 (built from their Go modules, cached like the
 * cluster's binaries) run against charts/datakey-operator.
 */

export const CHART = path.resolve(__dirname, '../../charts/datakey-operator');
export const RELEASE = 'datakey-operator';
export const RELEASE_NS = 'datakey-system';

export type HelmMajor = 'helm' | 'helm4';
export const HELMS: [string, HelmMajor][] = [
  ['helm 3', 'helm'],
  ['helm 4', 'helm4'],
];

/** A cold build of both takes minutes; the tests calling this allow for it. */
export const HELM_BUILD_TIMEOUT_MS = 30 * 60_000;

let binaries: Promise<Record<HelmMajor, string>> | undefined;
export function helmBinaries(): Promise<Record<HelmMajor, string>> {
  return (binaries ??= ensureHelm());
}

export interface HelmResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** No kubeconfig, cache or config from the host but the test cluster's: results must not depend on them. */
function helmEnv(): NodeJS.ProcessEnv {
  const home = path.join(os.tmpdir(), 'datakey-helm-home');
  return {
    PATH: process.env.PATH,
    // Also where client-go keeps its discovery cache (~/.kube/cache): without HOME it is the working directory.
    HOME: home,
    HELM_CACHE_HOME: path.join(home, 'cache'),
    HELM_CONFIG_HOME: path.join(home, 'config'),
    HELM_DATA_HOME: path.join(home, 'data'),
    ...(process.env.KUBECONFIG ? { KUBECONFIG: process.env.KUBECONFIG } : {}),
  };
}

export async function helm(major: HelmMajor, args: string[]): Promise<HelmResult> {
  const bin = (await helmBinaries())[major];
  const r = spawnSync(bin, args, { encoding: 'utf8', env: helmEnv() });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** helm without blocking the event loop (install/upgrade --wait take a while). */
export async function helmAsync(major: HelmMajor, args: string[]): Promise<HelmResult> {
  const bin = (await helmBinaries())[major];
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: helmEnv() });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface RenderOptions {
  /** Extra arguments: --set, --set-json, ... */
  args?: string[];
  namespace?: string;
  release?: string;
}

/** `helm template` output as text; throws with helm's message when it fails. */
export async function templateText(major: HelmMajor, o: RenderOptions = {}): Promise<string> {
  const r = await helm(major, [
    'template',
    o.release ?? RELEASE,
    CHART,
    '-n',
    o.namespace ?? RELEASE_NS,
    ...(o.args ?? []),
  ]);
  if (r.code !== 0) throw new Error(`helm template failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export interface Rendered {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** `helm template`, parsed into its objects. */
export async function render(major: HelmMajor, o: RenderOptions = {}): Promise<Rendered[]> {
  const text = await templateText(major, o);
  return (parseAllDocuments(text).map((d) => d.toJS()) as (Rendered | null)[]).filter(
    (o): o is Rendered => o !== null,
  );
}

/** The one rendered object of a kind (and name, when several). */
export function one(objects: Rendered[], kind: string, name?: string): Rendered {
  const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
  if (found.length !== 1)
    throw new Error(`expected one ${kind} ${name ?? ''}, got ${found.length}`);
  return found[0];
}

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * Root of the repository: the nearest directory above this file with a
 * package.json (the file runs from harness/devcluster under Jest and from
 * dist-harness/harness/devcluster once built).
 */
export const repoRoot = findRepoRoot(__dirname);

function findRepoRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/** Where the Go modules of the tools live (go.mod + go.sum committed). */
export const toolsDir = path.join(repoRoot, 'tools', 'controlplane');

/**
 * Cache of built binaries, outside the work tree, keyed by version:
 * `$XDG_CACHE_HOME/datakey-operator/<component>-<version>-<hash of its go.mod/go.sum>/bin/`.
 * DATAKEY_CACHE_DIR overrides the root.
 */
export function cacheRoot(): string {
  if (process.env.DATAKEY_CACHE_DIR) return path.resolve(process.env.DATAKEY_CACHE_DIR);
  const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(xdg, 'datakey-operator');
}

/**
 * State of the running control plane (certificates, kubeconfig, logs, PIDs).
 * Lives in the work tree (gitignored) so two checkouts never share a cluster.
 * DATAKEY_CLUSTER_DIR overrides it.
 */
export function defaultStateDir(): string {
  if (process.env.DATAKEY_CLUSTER_DIR) return path.resolve(process.env.DATAKEY_CLUSTER_DIR);
  return path.join(repoRoot, '.cluster');
}

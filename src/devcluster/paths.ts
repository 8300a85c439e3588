import * as os from 'node:os';
import * as path from 'node:path';

/** Root of the repository (this file lives in src/devcluster or dist/devcluster). */
export const repoRoot = path.resolve(__dirname, '..', '..');

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

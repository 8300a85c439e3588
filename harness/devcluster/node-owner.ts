// One node per machine: the CNI bridge, the kubepods cgroups and the host's
// iptables rules are shared by every work tree, while each tree keeps its
// cluster state in its own `.cluster/`. A file under /run names the state
// folder whose node runs, with the pid that keeps the claim alive (the
// starting `up`, then the kubelet). /run is tmpfs: a reboot clears it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { processStart } from '../../src/common/process';

export const NODE_OWNER_FILE = '/run/datakey-operator/node-owner';

export interface NodeOwner {
  stateDir: string;
  pid: number;
  /** Start time of pid in clock ticks since boot (field 22 of /proc/PID/stat): guards against PID reuse. */
  started: number;
}

export { processStart };

export function readOwner(file = NODE_OWNER_FILE): NodeOwner | undefined {
  try {
    const o = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<NodeOwner>;
    if (typeof o.stateDir !== 'string' || typeof o.pid !== 'number') return undefined;
    return { stateDir: o.stateDir, pid: o.pid, started: Number(o.started) };
  } catch {
    return undefined;
  }
}

/** True while the owner's pid is the very process that made the claim. */
export function ownerAlive(o: NodeOwner): boolean {
  return processStart(o.pid) === o.started;
}

/** The state folder of a live node of another state folder, if there is one. */
export function otherLiveOwner(stateDir: string, file = NODE_OWNER_FILE): string | undefined {
  const o = readOwner(file);
  if (!o || path.resolve(o.stateDir) === path.resolve(stateDir) || !ownerAlive(o)) return undefined;
  return o.stateDir;
}

export function ownerReason(otherDir: string): string {
  return `the node of ${otherDir} is running; run \`npm run cluster:down\` there`;
}

function write(file: string, o: NodeOwner, flag: 'wx' | 'w'): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp-${process.pid}`, JSON.stringify(o) + '\n', { flag: 'w' });
  if (flag === 'w') {
    fs.renameSync(`${file}.tmp-${process.pid}`, file);
    return;
  }
  // link() fails if the file exists: an atomic claim between two racing `up`s.
  try {
    fs.linkSync(`${file}.tmp-${process.pid}`, file);
  } finally {
    fs.rmSync(`${file}.tmp-${process.pid}`, { force: true });
  }
}

/**
 * Claims the machine's node for stateDir, held by pid (default: this process).
 * A stale claim (its pid gone) or one of the same state folder is replaced;
 * a live claim of another state folder throws with the reason.
 */
export function claimNode(stateDir: string, pid = process.pid, file = NODE_OWNER_FILE): void {
  const started = processStart(pid);
  if (started === undefined) throw new Error(`cannot claim the node: pid ${pid} is not running`);
  const claim = { stateDir: path.resolve(stateDir), pid, started };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      write(file, claim, 'wx');
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const other = otherLiveOwner(stateDir, file);
    if (other) throw new Error(`no node: ${ownerReason(other)}`);
    // Stale, unreadable or our own: take it over.
    fs.rmSync(file, { force: true });
  }
  throw new Error(`cannot claim the node in ${file}: it keeps changing`);
}

/** Moves our claim to another pid (the kubelet, once it runs). */
export function handOverNode(stateDir: string, pid: number, file = NODE_OWNER_FILE): void {
  const started = processStart(pid);
  if (started === undefined) throw new Error(`cannot hand the node over: pid ${pid} is gone`);
  write(file, { stateDir: path.resolve(stateDir), pid, started }, 'w');
}

/** Removes the claim if it is stateDir's (another tree's claim is left alone). */
export function releaseNode(stateDir: string, file = NODE_OWNER_FILE): void {
  const o = readOwner(file);
  if (o && path.resolve(o.stateDir) !== path.resolve(stateDir)) return;
  fs.rmSync(file, { force: true });
}

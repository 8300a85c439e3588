import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  bridgeExists,
  BRIDGE,
  hostFiles,
  kubepodsCgroups,
  mountsUnder,
  nodePaths,
  shimPids,
} from '../../harness/devcluster/node';
import { kubeChainsLeft, readSysctls } from '../../harness/devcluster/network';

interface RecordedProcess {
  name: string;
  pid: number;
  binary: string;
}

function aliveAs(p: RecordedProcess): boolean {
  try {
    const argv0 = fs.readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0')[0];
    const stat = fs.readFileSync(`/proc/${p.pid}/stat`, 'utf8');
    return argv0 === p.binary && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The sysctls the node recorded before it started ({} when none were). */
function recordedSysctls(stateDir: string): Record<string, string> {
  try {
    return JSON.parse(fs.readFileSync(nodePaths(stateDir).sysctls, 'utf8')) as Record<
      string,
      string
    >;
  } catch {
    return {};
  }
}

/**
 * Call before down(): records the cluster's processes; the returned function,
 * called after down(), lists what is left: live processes, shims, mounts under
 * the state folder, the CNI bridge, kubepods cgroups, files added to the host
 * paths the kubelet and containerd write to (compared with `hostFilesBefore`),
 * KUBE-* iptables chains (kube-proxy's and the kubelet's) and sysctls that
 * differ from what they were before the node started.
 */
export function checkNodeGone(
  stateDir: string,
  hostFilesBefore?: string[],
): () => Promise<string[]> {
  let processes: RecordedProcess[] = [];
  try {
    processes = (
      JSON.parse(fs.readFileSync(path.join(stateDir, 'state.json'), 'utf8')) as {
        processes: RecordedProcess[];
      }
    ).processes;
  } catch {
    // nothing recorded
  }
  const hadNode = processes.some((p) => p.name === 'kubelet');
  const sysctlsBefore = recordedSysctls(stateDir);
  return async () => {
    const problems: string[] = [];
    for (const p of processes) if (aliveAs(p)) problems.push(`${p.name} (pid ${p.pid}) alive`);
    if (!hadNode) return problems;
    const shims = shimPids(nodePaths(stateDir));
    if (shims.length > 0) problems.push(`containerd shims alive: ${shims.join(' ')}`);
    for (const m of mountsUnder(stateDir)) problems.push(`mount left: ${m}`);
    if (bridgeExists()) problems.push(`CNI bridge ${BRIDGE} left`);
    for (const c of kubepodsCgroups()) problems.push(`cgroup left: ${c}`);
    if (fs.existsSync(stateDir)) problems.push(`state folder left: ${stateDir}`);
    for (const c of await kubeChainsLeft()) problems.push(`iptables chain left: ${c}`);
    const now = readSysctls();
    for (const [k, v] of Object.entries(sysctlsBefore)) {
      if (now[k] !== v) problems.push(`sysctl ${k} is ${now[k]}, was ${v} before the node`);
    }
    if (hostFilesBefore) {
      const before = new Set(hostFilesBefore);
      for (const f of hostFiles()) if (!before.has(f)) problems.push(`host file left: ${f}`);
    }
    return problems;
  };
}

// Where a process's CPU went, from the .cpuprofile files node --cpu-prof writes:
// self time per function and per part (GC, JSON, TLS, client-node, the KMS core...),
// so that a benchmark names the resource that limits it instead of guessing.
import * as fs from 'node:fs';
import * as path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** The part of the program a frame belongs to. */
function partOf(frame: ProfileNode['callFrame']): string {
  const { functionName: fn, url } = frame;
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)') return 'idle';
  if (fn === '(program)') return 'program (native, unattributed)';
  if (/JSON|parse|stringify/.test(fn) && !url) return 'JSON';
  if (/node:(internal\/)?(tls|_tls|crypto|https)/.test(url) || /^(TLS|SSL)/.test(fn)) return 'TLS';
  if (/node:(internal\/)?(net|http|_http|stream|streams)/.test(url)) return 'HTTP/streams';
  if (url.includes('@kubernetes/client-node')) return 'client-node';
  if (url.includes('/node_modules/pino') || url.includes('thread-stream')) return 'logging';
  if (url.includes('/dist/kms/')) return 'KMS core';
  if (url.includes('/dist/')) return `operator (${url.split('/dist/')[1].split('/')[0]})`;
  if (url.includes('node_modules')) return 'other dependencies';
  if (url.startsWith('node:')) return 'node internals';
  return fn ? 'native/builtins' : 'other';
}

/** Logs, per profile written since `sinceMs`, the top parts and functions by self time. */
export function summarizeCpuProfiles(
  dir: string,
  sinceMs: number,
  log: (line: string) => void,
): void {
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => path.join(dir, f))
    .filter((f) => fs.statSync(f).mtimeMs >= sinceMs);
  for (const file of files) {
    const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const parts = new Map<string, number>();
    const fns = new Map<string, number>();
    let total = 0;
    profile.samples.forEach((id, i) => {
      const frame = (byId.get(id) as ProfileNode).callFrame;
      const us = profile.timeDeltas[i] ?? 0;
      total += us;
      const part = partOf(frame);
      parts.set(part, (parts.get(part) ?? 0) + us);
      const fn = `${frame.functionName || '(anonymous)'} ${path.basename(frame.url)}:${frame.lineNumber + 1}`;
      fns.set(fn, (fns.get(fn) ?? 0) + us);
    });
    const busy = total - (parts.get('idle') ?? 0);
    const top = (m: Map<string, number>, n: number) =>
      [...m]
        .sort((a, b) => b[1] - a[1])
        .slice(0, n)
        .map(([k, v]) => `${k} ${(v / 1e6).toFixed(2)}s (${((100 * v) / total).toFixed(0)}%)`)
        .join('; ');
    log(
      `cpu profile ${path.basename(file)}: ${(total / 1e6).toFixed(1)}s sampled, ` +
        `${(busy / 1e6).toFixed(1)}s busy (${((100 * busy) / Math.max(1, total)).toFixed(0)}%)`,
    );
    log(`  by part: ${top(parts, 10)}`);
    log(`  top functions: ${top(fns, 12)}`);
  }
}

// Scale series (figures, not a test): npm run bench:scale
//
// Runs bench:operator once per N of BENCH_SCALE_NS (default 1000,3000,10000), one
// after another against the same control plane, prints each run's JSON line, then
// one JSON line on the cost curve: per-DataKey time (ready_s / n) and memory
// ((rss_mb - rss_idle_mb) / n) of the largest N over those of the smallest.
// Linear means both ratios stay within 1.3.
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';

const SIZES = (process.env.BENCH_SCALE_NS ?? '1000,3000,10000').split(',').map((s) => {
  if (!/^\d{1,6}$/.test(s.trim())) throw new Error('BENCH_SCALE_NS must list positive integers');
  return Number(s);
});

interface Run {
  n: number;
  ready_s: number | null;
  rss_mb: number;
  rss_idle_mb: number;
}

function runOne(n: number): Promise<Run> {
  // A larger N needs a longer wait for Ready than the default 300 s.
  const timeoutS = String(Math.max(300, Math.ceil(n * 0.15)));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'operator-bench.js')], {
      env: { ...process.env, BENCH_N: String(n), BENCH_TIMEOUT_S: timeoutS },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.once('exit', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0 || !last.startsWith('{')) {
        reject(new Error(`bench:operator with BENCH_N=${n} failed (exit ${code})`));
        return;
      }
      process.stdout.write(`${last}\n`);
      resolve(JSON.parse(last) as Run);
    });
  });
}

async function main(): Promise<void> {
  const runs: Run[] = [];
  for (const n of SIZES) {
    process.stderr.write(`[bench:scale] N=${n}; load average ${os.loadavg().join(' ')}\n`);
    runs.push(await runOne(n));
  }
  const [small, large] = [runs[0], runs[runs.length - 1]];
  const perKeyS = (r: Run) => (r.ready_s ?? NaN) / r.n;
  const perKeyMb = (r: Run) => (r.rss_mb - r.rss_idle_mb) / r.n;
  const ratio = (f: (r: Run) => number) => Math.round((100 * f(large)) / f(small)) / 100;
  process.stdout.write(
    `${JSON.stringify({
      curve: runs.map((r) => ({
        n: r.n,
        ms_per_datakey: Math.round(1e5 * perKeyS(r)) / 100,
        kb_per_datakey: Math.round(1024 * perKeyMb(r)),
      })),
      time_ratio: ratio(perKeyS),
      memory_ratio: ratio(perKeyMb),
      load_avg: os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' '),
    })}\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`[bench:scale] ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});

import * as fs from 'node:fs';

/**
 * The start time of a live, non-zombie process in clock ticks since boot
 * (field 22 of /proc/PID/stat), or undefined. A pid plus its start time names
 * one process for good: a reused pid has a different start time.
 */
export function processStart(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself contain spaces or ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return undefined;
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/** True while `pid` runs (without /proc: exists at all). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

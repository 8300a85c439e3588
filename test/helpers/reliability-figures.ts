import * as fs from 'node:fs';

/**
 * Figures of the reliability suite: each fault or abuse test appends one record;
 * the global teardown sums them into the suite's one JSON line.
 */
export interface FaultFigures {
  fault: string;
  lost?: number;
  regenerated?: number;
  double_keys?: number;
  crashes?: number;
  '5xx'?: number;
  leaks?: number;
  /** Seconds from the end of the fault until everything was Ready again. */
  converge_s?: number;
  /** Writes a resumed stale leader attempted and its write fence refused unsent. */
  fenced_writes?: number;
}

export function recordFigures(figures: FaultFigures): void {
  const file = process.env.DATAKEY_RELIABILITY_FIGURES;
  if (file) fs.appendFileSync(file, `${JSON.stringify(figures)}\n`);
}

export function summarize(jsonLines: string) {
  const records = jsonLines
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as FaultFigures);
  const sum = (field: keyof FaultFigures) =>
    records.reduce((n, r) => n + (typeof r[field] === 'number' ? (r[field] as number) : 0), 0);
  const converge = records.map((r) => r.converge_s).filter((v): v is number => v !== undefined);
  return {
    form: process.env.DATAKEY_RELIABILITY === 'full' ? 'full' : 'short',
    faults: records.filter((r) => r.converge_s !== undefined).length,
    lost: sum('lost'),
    regenerated: sum('regenerated'),
    double_keys: sum('double_keys'),
    crashes: sum('crashes'),
    '5xx': sum('5xx'),
    leaks: sum('leaks'),
    fenced_writes: sum('fenced_writes'),
    max_converge_s: converge.length ? Math.max(...converge) : null,
    records: records.length,
  };
}

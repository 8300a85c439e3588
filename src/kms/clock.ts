/** Time source of the core; tests inject a manual clock to drive automatic rotation. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

export class ManualClock implements Clock {
  private current: number;
  constructor(start: Date = new Date('2026-01-01T00:00:00Z')) {
    this.current = start.getTime();
  }
  now(): Date {
    return new Date(this.current);
  }
  advance(ms: number): void {
    this.current += ms;
  }
  set(date: Date): void {
    this.current = date.getTime();
  }
}

/** Alibaba's time format: UTC with second precision, `YYYY-MM-DDTHH:MM:SSZ`. */
export const formatKmsTime = (date: Date): string => date.toISOString().replace(/\.\d{3}Z$/, 'Z');

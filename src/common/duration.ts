const UNIT_SECONDS: Record<string, number> = { d: 86400, h: 3600, m: 60, s: 1 };

/**
 * A duration written as an integer and a unit (d, h, m or s), e.g. `30d`, `2m`,
 * `604800s`: the syntax of Alibaba's RotationInterval, used for every duration
 * the project takes. Seconds, or undefined when malformed or outside [min, max].
 */
export function parseDuration(
  value: string,
  range: { minSeconds: number; maxSeconds: number },
): number | undefined {
  const match = /^(\d{1,12})([dhms])$/.exec(value);
  if (!match) return undefined;
  const seconds = Number(match[1]) * UNIT_SECONDS[match[2]];
  return seconds >= range.minSeconds && seconds <= range.maxSeconds ? seconds : undefined;
}

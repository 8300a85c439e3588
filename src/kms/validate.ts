import { parseDuration } from '../common/duration';
import { invalidParameter } from './errors';

/** Parameter checks shared by the core and the HTTP API; errors name the Alibaba parameter. */

export const MAX_DATA_KEY_BYTES = 1024;
export const MAX_PLAINTEXT_BYTES = 6 * 1024;
export const MAX_AAD_BYTES = 8192;
export const MAX_ENCRYPTION_CONTEXT_CHARS = 8192;
export const MAX_DESCRIPTION_CHARS = 8192;
export const MAX_KEY_ID_CHARS = 512;

export type EncryptionContext = Record<string, string>;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ALIAS_NAME = /^alias\/[A-Za-z0-9_\-/]{1,255}$/;
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function decodeBase64(name: string, value: string, maxBytes: number): Buffer {
  if (value.length > Math.ceil(maxBytes / 3) * 4 || !BASE64.test(value)) {
    throw invalidParameter(name, `It must be base64 of at most ${maxBytes} bytes.`);
  }
  return Buffer.from(value, 'base64');
}

export function parseInteger(name: string, value: string, min: number, max: number): number {
  if (!/^\d{1,10}$/.test(value)) throw invalidParameter(name, `It must be an integer.`);
  return checkRange(name, Number(value), min, max);
}

export function checkRange(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidParameter(name, `It must be an integer from ${min} to ${max}.`);
  }
  return value;
}

export function parseBoolean(name: string, value: string): boolean {
  const lower = value.toLowerCase();
  if (lower === 'true') return true;
  if (lower === 'false') return false;
  throw invalidParameter(name, 'It must be true or false.');
}

/** Accepts a JSON object of strings (the SDKs send either JSON or flattened keys). */
export function parseEncryptionContext(name: string, json: string): EncryptionContext {
  if (json.length > MAX_ENCRYPTION_CONTEXT_CHARS) {
    throw invalidParameter(name, `It must be at most ${MAX_ENCRYPTION_CONTEXT_CHARS} characters.`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw invalidParameter(name, 'It must be a JSON object of string values.');
  }
  return checkEncryptionContext(name, parsed);
}

export function checkEncryptionContext(name: string, value: unknown): EncryptionContext {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidParameter(name, 'It must be a JSON object of string values.');
  }
  // No prototype: a key named __proto__ must be stored, not swallowed as a prototype setter.
  const context: EncryptionContext = Object.create(null);
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string' || k === '') {
      throw invalidParameter(name, 'It must be a JSON object of string values.');
    }
    context[k] = v;
  }
  if (canonicalEncryptionContext(context).length > MAX_ENCRYPTION_CONTEXT_CHARS) {
    throw invalidParameter(name, `It must be at most ${MAX_ENCRYPTION_CONTEXT_CHARS} characters.`);
  }
  return context;
}

/** Key order never matters: the context is bound as sorted-key JSON. */
export function canonicalEncryptionContext(context: EncryptionContext | undefined): string {
  if (!context) return '';
  const keys = Object.keys(context).sort();
  if (keys.length === 0) return '';
  // Built by hand: a JS object would list integer-like keys ("2", "10") first, numerically.
  return `{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(context[k])}`).join(',')}}`;
}

export function checkAliasName(name: string, value: string): string {
  if (!ALIAS_NAME.test(value) || value === 'alias/acs' || value.startsWith('alias/acs/')) {
    throw invalidParameter(
      name,
      'It must start with alias/ followed by 1 to 255 letters, digits, _, - or /, and must not use the reserved prefix alias/acs.',
    );
  }
  return value;
}

export function checkDescription(value: string): string {
  if (value.length > MAX_DESCRIPTION_CHARS) {
    throw invalidParameter(
      'Description',
      `It must be at most ${MAX_DESCRIPTION_CHARS} characters.`,
    );
  }
  return value;
}

/**
 * `table[key]` for the table's own entries only: user input such as `toString`,
 * `constructor` or `__proto__` must never reach a prototype's members.
 */
export function ownEntry<T>(table: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

export const DAY_SECONDS = 86400;

/** `RotationInterval` is an integer and a unit (d, h, m, s), e.g. `30d` or `604800s`. */
export function parseRotationInterval(value: string, minSeconds: number): number {
  const seconds = parseDuration(value, { minSeconds, maxSeconds: 365 * DAY_SECONDS });
  if (seconds === undefined) {
    throw invalidParameter(
      'RotationInterval',
      `It must be an integer followed by d, h, m or s, from ${minSeconds}s to 365d.`,
    );
  }
  return seconds;
}

export interface Page {
  pageNumber: number;
  pageSize: number;
}

export function paginate<T>(items: T[], page: Page): { items: T[]; totalCount: number } {
  checkRange('PageNumber', page.pageNumber, 1, 1_000_000);
  checkRange('PageSize', page.pageSize, 1, 100);
  const start = (page.pageNumber - 1) * page.pageSize;
  return { items: items.slice(start, start + page.pageSize), totalCount: items.length };
}

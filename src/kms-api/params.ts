import { KmsError, invalidParameter, missingParameter } from '../kms/errors';
import {
  checkEncryptionContext,
  decodeBase64,
  parseBoolean,
  parseEncryptionContext,
  parseInteger,
  type EncryptionContext,
  type Page,
} from '../kms/validate';

export const MAX_PARAMETERS = 256;
export const MAX_NAME_CHARS = 256;
export const MAX_VALUE_CHARS = 32 * 1024;

/**
 * The request's parameters, query string and form body merged (RPC style), with
 * typed accessors whose errors name the parameter.
 */
export class Params {
  constructor(readonly all: ReadonlyMap<string, string>) {}

  /** Parses a query string or form body into `into`; duplicates are ambiguous and refused. */
  static merge(sources: string[]): Params {
    const all = new Map<string, string>();
    for (const source of sources) {
      if (source === '') continue;
      for (const [name, value] of new URLSearchParams(source)) {
        if (name === '') continue;
        if (all.size >= MAX_PARAMETERS) {
          throw new KmsError(
            400,
            'InvalidParameter',
            `At most ${MAX_PARAMETERS} parameters are accepted.`,
          );
        }
        if (name.length > MAX_NAME_CHARS) {
          throw new KmsError(400, 'InvalidParameter', 'A parameter name is too long.');
        }
        if (value.length > MAX_VALUE_CHARS)
          throw invalidParameter(printable(name), 'It is too long.');
        if (all.has(name)) throw invalidParameter(printable(name), 'It was given more than once.');
        all.set(name, value);
      }
    }
    return new Params(all);
  }

  optional(name: string): string | undefined {
    return this.all.get(name);
  }

  required(name: string): string {
    const value = this.all.get(name);
    if (value === undefined || value === '') throw missingParameter(name);
    return value;
  }

  integer(name: string, min: number, max: number): number | undefined {
    const value = this.all.get(name);
    return value === undefined || value === '' ? undefined : parseInteger(name, value, min, max);
  }

  requiredInteger(name: string, min: number, max: number): number {
    return parseInteger(name, this.required(name), min, max);
  }

  boolean(name: string): boolean | undefined {
    const value = this.all.get(name);
    return value === undefined || value === '' ? undefined : parseBoolean(name, value);
  }

  base64(name: string, maxBytes: number): Buffer | undefined {
    const value = this.all.get(name);
    return value === undefined || value === '' ? undefined : decodeBase64(name, value, maxBytes);
  }

  requiredBase64(name: string, maxBytes: number): Buffer {
    return decodeBase64(name, this.required(name), maxBytes);
  }

  /** A JSON object (pop-core style) or flattened `Name.key=value` pairs (kms20160120 style). */
  encryptionContext(name: string): EncryptionContext | undefined {
    const json = this.all.get(name);
    const prefix = `${name}.`;
    const flattened: Record<string, string> = Object.create(null);
    let hasFlattened = false;
    for (const [key, value] of this.all) {
      if (key.startsWith(prefix)) {
        flattened[key.slice(prefix.length)] = value;
        hasFlattened = true;
      }
    }
    if (json !== undefined && hasFlattened) {
      throw invalidParameter(name, 'Give it either as JSON or as flattened keys, not both.');
    }
    if (hasFlattened) return checkEncryptionContext(name, flattened);
    if (json === undefined || json === '') return undefined;
    return parseEncryptionContext(name, json);
  }
}

/** Parameter names echo back in messages; keep them to printable ASCII. */
export function printable(name: string): string {
  return name.replace(/[^\x20-\x7e]/g, '?').slice(0, 64);
}

/** PageNumber / PageSize of a List action, with the service's defaults. */
export function page(params: Params): Page {
  return {
    pageNumber: params.integer('PageNumber', 1, 1_000_000) ?? 1,
    pageSize: params.integer('PageSize', 1, 100) ?? 10,
  };
}

export function pageFields(p: Page, totalCount: number) {
  return { TotalCount: totalCount, PageNumber: p.pageNumber, PageSize: p.pageSize };
}

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Runs the Argo CD health checks of docs/argocd/ with Debian's Lua 5.4 the way
 * Argo CD does: the object as a global table `obj`, the script's returned
 * table `hs` read back.
 */

const DOCS = path.resolve(__dirname, '../../docs/argocd');
export const HEALTH_SCRIPTS = {
  MasterKey: path.join(DOCS, 'masterkey-health.lua'),
  DataKey: path.join(DOCS, 'datakey-health.lua'),
} as const;

export interface Health {
  status: string;
  message: string;
}

/** A Lua string literal: every byte outside printable ASCII, and " and \, as \ddd. */
function luaString(s: string): string {
  let out = '"';
  for (const byte of Buffer.from(s, 'utf8')) {
    const printable = byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c;
    out += printable ? String.fromCharCode(byte) : `\\${String(byte).padStart(3, '0')}`;
  }
  return `${out}"`;
}

/** A JSON value as a Lua table constructor (arrays 1-based, null as nil). */
export function toLua(value: unknown): string {
  if (value === null || value === undefined) return 'nil';
  if (typeof value === 'string') return luaString(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`not a JSON number: ${value}`);
    return String(value);
  }
  if (typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `{${value.map(toLua).join(', ')}}`;
  if (typeof value === 'object') {
    const fields = Object.entries(value as Record<string, unknown>).map(
      ([k, v]) => `[${luaString(k)}] = ${toLua(v)}`,
    );
    return `{${fields.join(', ')}}`;
  }
  throw new Error(`cannot convert ${typeof value} to Lua`);
}

/** Runs a Lua program with lua5.4 and returns its stdout. */
export function runLua(program: string): string {
  const r = spawnSync('lua5.4', ['-'], { input: program, encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run lua5.4 (npm run setup installs it): ${r.error.message}`);
  if (r.status !== 0) throw new Error(`lua5.4 failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** The health Argo CD would show for `obj` with the documented script of its kind. */
export function argoHealth(kind: keyof typeof HEALTH_SCRIPTS, obj: unknown): Health {
  const script = fs.readFileSync(HEALTH_SCRIPTS[kind], 'utf8');
  const out = runLua(
    [
      `obj = ${toLua(obj)}`,
      'local hs = (function()',
      script,
      'end)()',
      'io.write(tostring(hs.status), "\\n", tostring(hs.message or ""))',
    ].join('\n'),
  );
  const nl = out.indexOf('\n');
  return { status: out.slice(0, nl), message: out.slice(nl + 1) };
}

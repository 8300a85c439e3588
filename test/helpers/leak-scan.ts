import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { defaultStateDir } from '../../harness/devcluster/paths';

/**
 * Leak scan: looks for plaintext data keys (raw bytes, base64, hex) in every
 * value stored in etcd and in log lines. etcd is read through its v3 JSON
 * gateway (POST /v3/kv/range), which needs no extra binary.
 */

export interface Needle {
  form: string;
  bytes: Buffer;
}

/** Raw, base64 and hex (lower and upper case) forms of each plaintext (given as base64). */
export function needlesOf(plaintextsB64: Iterable<string>): Needle[] {
  const needles: Needle[] = [];
  for (const b64 of plaintextsB64) {
    const raw = Buffer.from(b64, 'base64');
    const hex = raw.toString('hex');
    needles.push(
      { form: `raw:${hex}`, bytes: raw },
      { form: `base64:${hex}`, bytes: Buffer.from(raw.toString('base64')) },
      { form: `base64url:${hex}`, bytes: Buffer.from(raw.toString('base64url')) },
      { form: `hex:${hex}`, bytes: Buffer.from(hex) },
      { form: `HEX:${hex}`, bytes: Buffer.from(hex.toUpperCase()) },
    );
  }
  return needles;
}

export function findNeedles(haystack: Buffer, needles: Needle[]): string[] {
  return needles.filter((n) => haystack.includes(n.bytes)).map((n) => n.form);
}

/** The etcd client endpoint of the local control plane, from its state folder. */
export function localEtcdEndpoint(): string {
  const state = JSON.parse(fs.readFileSync(path.join(defaultStateDir(), 'state.json'), 'utf8')) as {
    ports: { etcdClient: number };
  };
  return `http://127.0.0.1:${state.ports.etcdClient}`;
}

function post(url: string, body: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json' }, timeout: 30_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) reject(new Error(`${url}: ${res.statusCode} ${text}`));
          else resolve(JSON.parse(text));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${url} timed out`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** Every key and value in etcd (current revision), paged. */
export async function readAllEtcd(endpoint: string): Promise<{ count: number; all: Buffer }> {
  const parts: Buffer[] = [];
  let count = 0;
  let key = Buffer.from([0]);
  for (;;) {
    const r = (await post(`${endpoint}/v3/kv/range`, {
      key: key.toString('base64'),
      range_end: Buffer.from([0]).toString('base64'),
      limit: 500,
    })) as { kvs?: { key: string; value?: string }[]; more?: boolean };
    const kvs = r.kvs ?? [];
    for (const kv of kvs) {
      parts.push(Buffer.from(kv.key, 'base64'), Buffer.from(kv.value ?? '', 'base64'));
      count++;
    }
    if (!r.more || kvs.length === 0) break;
    key = Buffer.concat([Buffer.from(kvs[kvs.length - 1].key, 'base64'), Buffer.from([0])]);
  }
  // A separator no needle spans.
  return { count, all: Buffer.concat(parts.flatMap((p) => [p, Buffer.from('\n\u0000\n')])) };
}

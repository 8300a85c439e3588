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

/**
 * Every value etcd still holds in its history (all revisions since the last
 * compaction, not only the current ones), read with a watch from revision 1
 * through the JSON gateway (POST /v3/watch streams one JSON result per line).
 */
export async function readEtcdHistory(
  endpoint: string,
): Promise<{ revisions: number; all: Buffer }> {
  const head = (await post(`${endpoint}/v3/kv/range`, {
    key: Buffer.from([0]).toString('base64'),
    limit: 1,
  })) as { header: { revision: string } };
  const target = Number(head.header.revision);
  const parts: Buffer[] = [];
  let revisions = 0;
  let start = 1;
  for (;;) {
    const r = await watchFrom(endpoint, start, target, (kv) => {
      parts.push(Buffer.from(kv.key, 'base64'), Buffer.from(kv.value ?? '', 'base64'));
      revisions++;
    });
    if (r.compactedTo === undefined) break;
    start = r.compactedTo; // history before it is gone: read from there
  }
  return { revisions, all: Buffer.concat(parts.flatMap((p) => [p, Buffer.from('\n\u0000\n')])) };
}

function watchFrom(
  endpoint: string,
  start: number,
  target: number,
  onKv: (kv: { key: string; value?: string }) => void,
): Promise<{ compactedTo?: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${endpoint}/v3/watch`, { method: 'POST' }, (res) => {
      let buffered = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          const { result } = JSON.parse(line) as {
            result?: {
              compact_revision?: string;
              canceled?: boolean;
              events?: { kv: { key: string; value?: string; mod_revision: string } }[];
            };
          };
          if (result?.canceled && result.compact_revision) {
            req.destroy();
            return resolve({ compactedTo: Number(result.compact_revision) });
          }
          for (const e of result?.events ?? []) {
            onKv(e.kv);
            if (Number(e.kv.mod_revision) >= target) {
              req.destroy();
              return resolve({});
            }
          }
        }
      });
      res.on('error', () => undefined);
    });
    req.setTimeout(120_000, () => req.destroy(new Error('etcd history watch timed out')));
    req.on('error', (err) => {
      if (!req.destroyed || (err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err);
    });
    req.end(
      JSON.stringify({
        create_request: {
          key: Buffer.from([0]).toString('base64'),
          range_end: Buffer.from([0]).toString('base64'),
          start_revision: String(start),
        },
      }),
    );
  });
}

/**
 * Compacts etcd's history past every revision it holds now (two marker writes
 * first, so that even a watch resuming right after the newest revision is
 * behind the compaction), as etcd's periodic compaction would: a watch from an
 * older revision is then answered 410 Gone. Returns the compaction revision.
 */
export async function compactEtcdHistory(endpoint: string): Promise<number> {
  let revision = 0;
  for (const n of [1, 2]) {
    const put = (await post(`${endpoint}/v3/kv/put`, {
      key: Buffer.from('datakey-test/compaction-marker').toString('base64'),
      value: Buffer.from(String(n)).toString('base64'),
    })) as { header: { revision: string } };
    revision = Number(put.header.revision);
  }
  await post(`${endpoint}/v3/kv/compaction`, { revision: String(revision), physical: true });
  return revision;
}

import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import { formatKmsTime } from '../../src/kms/clock';
import { encodeParams, signRequest } from '../../src/kms-api/signature';

/** Hand-built RPC requests, for what the SDKs cannot send (bad signatures, replays, XML, noise). */

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The parsed body when it is JSON. */
  json?: Record<string, unknown>;
}

export interface RawOptions {
  method?: string;
  /** Raw query string, without '?'. */
  query?: string;
  body?: string | Buffer;
  headers?: http.OutgoingHttpHeaders;
  timeoutMs?: number;
  agent?: http.Agent;
}

/** Sends one request; rejects on a network error or when no answer comes in `timeoutMs`. */
export function rawRequest(baseUrl: string, options: RawOptions = {}): Promise<RawResponse> {
  const url = new URL(baseUrl);
  const timeoutMs = options.timeoutMs ?? 5_000;
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: options.method ?? 'GET',
        path: `/${options.query !== undefined ? `?${options.query}` : ''}`,
        headers: options.headers,
        agent: options.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> | undefined;
          try {
            const parsed: unknown = JSON.parse(text);
            if (parsed && typeof parsed === 'object') json = parsed as Record<string, unknown>;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    if (options.body !== undefined) req.end(options.body);
    else req.end();
  });
}

export interface Credentials {
  accessKeyId: string;
  accessKeySecret: string;
}

/** `YYYY-MM-DDTHH:MM:SSZ`, the format the SDKs send. */
export const kmsTimestamp = (date = new Date()): string => formatKmsTime(date);

/** The common RPC parameters plus `params`, signed with the project's own signer. */
export function signedParams(
  creds: Credentials,
  action: string,
  params: Record<string, string>,
  options: { method?: string; timestamp?: string; nonce?: string; secret?: string } = {},
): Map<string, string> {
  return signRequest(creds, action, params, {
    ...options,
    nonce: options.nonce ?? randomUUID(),
    timestamp: options.timestamp ?? kmsTimestamp(),
  });
}

export { encodeParams };

/** A correctly signed GET (query) or POST (form body) request. */
export function signedRequest(
  baseUrl: string,
  creds: Credentials,
  action: string,
  params: Record<string, string>,
  options: {
    method?: 'GET' | 'POST';
    timestamp?: string;
    nonce?: string;
    secret?: string;
    timeoutMs?: number;
  } = {},
): Promise<RawResponse> {
  const method = options.method ?? 'GET';
  const encoded = encodeParams(signedParams(creds, action, params, { ...options, method }));
  return method === 'GET'
    ? rawRequest(baseUrl, { method, query: encoded, timeoutMs: options.timeoutMs })
    : rawRequest(baseUrl, {
        method,
        body: encoded,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        timeoutMs: options.timeoutMs,
      });
}

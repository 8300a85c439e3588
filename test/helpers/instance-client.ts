import { createPrivateKey, type KeyObject } from 'node:crypto';
import * as https from 'node:https';
import { privateKeyPemOfPkcs12 } from '../../harness/bench/worker-process';
import { signedHeaders } from '../../src/kms-instance-api/signature';
import type { ClientKeyFile } from './instance-provisioning';

/**
 * A bare Instance API client for what no SDK sends (fuzzing, raw checks): the
 * client key's RSA key is read from its PKCS#12 with openssl, the same file
 * the SDKs read.
 */

export interface RawClientKey {
  clientKeyId: string;
  privateKey: KeyObject;
}

export function rawClientKey(file: ClientKeyFile): RawClientKey {
  const { KeyId, PrivateKeyData } = JSON.parse(file.content) as Record<string, string>;
  const pem = privateKeyPemOfPkcs12(Buffer.from(PrivateKeyData, 'base64'), file.password);
  return { clientKeyId: KeyId, privateKey: createPrivateKey(pem) };
}

export interface InstanceResponse {
  status: number;
  body: Buffer;
}

export interface RawInstanceRequest {
  method?: string;
  path?: string;
  headers: Record<string, string>;
  body: Buffer;
}

/** Sends one request over TLS trusting `ca`; resolves with whatever comes back. */
export function sendInstanceRequest(
  url: string,
  ca: string,
  request: RawInstanceRequest,
  timeoutMs = 5_000,
): Promise<InstanceResponse> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url);
    const req = https.request(
      {
        hostname,
        port,
        path: request.path ?? '/',
        method: request.method ?? 'POST',
        ca,
        headers: { ...request.headers, 'content-length': String(request.body.length) },
        agent: false,
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(request.body);
  });
}

/** A correctly signed request for `operation`. */
export function signedInstanceRequest(
  key: RawClientKey,
  operation: string,
  body: Buffer,
  date?: Date,
): RawInstanceRequest {
  return { headers: signedHeaders(operation, body, key.clientKeyId, key.privateKey, date), body };
}

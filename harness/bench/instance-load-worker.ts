import { createPrivateKey } from 'node:crypto';
import * as https from 'node:https';
import { MESSAGES } from '../../src/kms-instance-api/messages';
import { encode } from '../../src/kms-instance-api/protobuf';
import { signedHeaders } from '../../src/kms-instance-api/signature';
import { runWorker } from './worker-process';

/**
 * Load generator for the Instance API, run as a child process: `connections`
 * keep-alive TLS connections, each sending AdvanceGenerateDataKey back to back
 * for `seconds`. The protocol has no nonce, so one signature serves every
 * request of the same second (the body is fixed): the client signs once a
 * second and the figures are the server's, which verifies every request.
 */
export interface InstanceLoadJob {
  url: string;
  ca: string;
  connections: number;
  seconds: number;
  keyId: string;
  clientKeyId: string;
  privateKeyPem: string;
}

export interface InstanceLoadResult {
  ok: number;
  failed: number;
  seconds: number;
  p50: number;
  p99: number;
  max: number;
}

async function main(): Promise<InstanceLoadResult> {
  const job = JSON.parse(process.argv[2] ?? '') as InstanceLoadJob;
  const privateKey = createPrivateKey(job.privateKeyPem);
  const body = encode(MESSAGES.AdvanceGenerateDataKey.request, {
    KeyId: job.keyId,
    NumberOfBytes: 32,
    Aad: Buffer.from('bench'),
  });
  let second = -1;
  let headers: Record<string, string> = {};
  const headersNow = () => {
    const now = Math.floor(Date.now() / 1000);
    if (now !== second) {
      second = now;
      headers = {
        ...signedHeaders('AdvanceGenerateDataKey', body, job.clientKeyId, privateKey),
        'content-length': String(body.length),
      };
    }
    return headers;
  };
  const agent = new https.Agent({ keepAlive: true, maxSockets: job.connections, ca: job.ca });
  const { hostname, port } = new URL(job.url);
  const latencies: number[] = [];
  let failed = 0;
  const started = performance.now();
  const end = started + job.seconds * 1000;
  const one = () =>
    new Promise<number>((resolve) => {
      const sent = performance.now();
      const req = https.request(
        { hostname, port, path: '/', method: 'POST', agent, headers: headersNow() },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode === 200 ? performance.now() - sent : -1));
        },
      );
      req.on('error', () => resolve(-1));
      req.end(body);
    });
  const loop = async () => {
    while (performance.now() < end) {
      const ms = await one();
      if (ms < 0) failed++;
      else latencies.push(ms);
    }
  };
  await Promise.all(Array.from({ length: job.connections }, loop));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round((latencies[Math.floor(q * (latencies.length - 1))] ?? NaN) * 100) / 100;
  return {
    ok: latencies.length,
    failed,
    seconds,
    p50: at(0.5),
    p99: at(0.99),
    max: at(1),
  };
}

runWorker('instance load worker', main);

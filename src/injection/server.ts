import * as https from 'node:https';
import type * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { InjectionContext } from './context';
import { BodyError, closeGracefully, readBody } from '../common/http';
import {
  currentPlaintext,
  deliver,
  reportAgentFailure,
  zeroKeys,
  type DeliveryAnswer,
} from './delivery';
import type { DeliveryLimits } from './delivery-limits';
import { DELIVER_PATH, REPORT_PATH, WEBHOOK_PATH } from './endpoints';
import { admit, reviewRequest, type AdmissionRequest, type InjectionConfig } from './pod-patch';
import type { ServingMaterial } from './serving-certs';

/**
 * One TLS port for the API server's AdmissionReviews (`/mutate-pods`) and the
 * agents' requests (`/v1/deliver`, `/v1/report`). The certificate is swapped in
 * place when it is renewed.
 */

// Pods carry at most 1.5 MiB of spec in etcd; an AdmissionReview holds one or two of them.
const MAX_REVIEW_BYTES = 4 * 1024 * 1024;
const MAX_AGENT_BYTES = 16 * 1024;

export interface InjectionServer {
  url: string;
  setMaterial(material: ServingMaterial): void;
  /**
   * From now on every response closes its connection: a client that pooled a
   * connection to this pod (the API server reaches webhooks through the
   * Service's ClusterIP, so it keeps reusing one) opens a new one, to a pod that
   * is not stopping, instead of finding this one closed under it.
   */
  drain(): void;
  close(): Promise<void>;
}

function send(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/** Both endpoints take JSON only; anything else is refused before it is parsed. */
function isJson(req: http.IncomingMessage): boolean {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  return type === 'application/json';
}

async function answerReview(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  ctx: InjectionContext,
  config: () => InjectionConfig,
): Promise<void> {
  const end = ctx.metrics.admissionSeconds.startTimer();
  let request: AdmissionRequest;
  try {
    const raw = await readBody(req, MAX_REVIEW_BYTES);
    if (!isJson(req)) throw new BodyError(415, 'the content type must be application/json');
    request = reviewRequest(JSON.parse(raw.toString('utf8')));
  } catch (err) {
    ctx.metrics.admissions.inc({ result: 'invalid' });
    const status = err instanceof BodyError ? err.status : 400;
    send(res, status, { message: `not an AdmissionReview: ${(err as Error).message}` });
    return;
  }
  const response = admit(request, config());
  ctx.metrics.admissions.inc({
    result: !response.allowed ? 'refused' : response.patch ? 'patched' : 'unchanged',
  });
  if (!response.allowed) {
    ctx.logger.info(
      { namespace: request.namespace, reason: response.status?.message },
      'pod refused',
    );
  }
  send(res, 200, { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response });
  end();
}

async function answerAgent(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  ctx: InjectionContext,
  limits: DeliveryLimits,
  handler: typeof deliver,
): Promise<void> {
  let answer: DeliveryAnswer;
  const headers: Record<string, string> = {};
  try {
    const text = (await readBody(req, MAX_AGENT_BYTES)).toString('utf8');
    if (!isJson(req)) throw new BodyError(415, 'the content type must be application/json');
    const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    const admission = token ? await limits.admit(token) : ({ ok: true } as const);
    if (admission.ok) {
      answer = await handler(ctx, token, body);
    } else {
      answer = {
        status: admission.status,
        result: admission.status === 429 ? 'throttled' : 'unauthenticated',
        message: admission.message,
      };
      if (admission.status === 429) headers['retry-after'] = String(admission.retryAfterSeconds);
    }
  } catch (err) {
    const status = err instanceof BodyError ? err.status : 503;
    answer = {
      status,
      result: status === 503 ? 'error' : 'invalid',
      message: (err as Error).message,
    };
    if (status === 503) ctx.logger.warn({ err: (err as Error).message }, 'delivery failed');
  }
  if (handler === deliver) ctx.metrics.deliveries.inc({ result: answer.result });
  const keys = answer.keys ?? [];
  try {
    if (answer.status !== 200 || handler !== deliver) {
      send(res, answer.status, { message: answer.message }, headers);
      return;
    }
    send(res, 200, {
      keys: keys.map((k) => ({
        name: k.name,
        plaintext: currentPlaintext(k).toString('base64'),
        generation: k.generation,
        generations: k.generations.map((g) => ({
          generation: g.generation,
          plaintext: g.plaintext.toString('base64'),
        })),
      })),
    });
  } finally {
    zeroKeys(keys);
  }
}

function route(ctx: InjectionContext, config: () => InjectionConfig, limits: DeliveryLimits) {
  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0];
    const handled =
      req.method !== 'POST'
        ? undefined
        : path === WEBHOOK_PATH
          ? answerReview(req, res, ctx, config)
          : path === DELIVER_PATH
            ? answerAgent(req, res, ctx, limits, deliver)
            : path === REPORT_PATH
              ? answerAgent(req, res, ctx, limits, reportAgentFailure)
              : undefined;
    if (!handled) {
      req.resume();
      send(res, path === WEBHOOK_PATH || path === DELIVER_PATH ? 405 : 404, {
        message: `no ${req.method} ${path} here`,
      });
      return;
    }
    handled.catch((err: Error) => {
      ctx.logger.error({ err: err.message, path }, 'injection endpoint failed');
      if (!res.headersSent) send(res, 503, { message: 'temporarily unavailable' });
    });
  };
}

export function serveInjection(
  ctx: InjectionContext,
  listen: { host: string; port: number },
  material: ServingMaterial,
  config: () => InjectionConfig,
  limits: DeliveryLimits,
): Promise<InjectionServer> {
  const server = https.createServer(
    {
      cert: material.cert,
      key: material.key,
      minVersion: 'TLSv1.2',
      keepAliveTimeout: 30_000,
      // A slow sender holds a socket at most this long (408), headers for less.
      requestTimeout: 15_000,
      headersTimeout: 10_000,
      maxHeaderSize: 16 * 1024,
    },
    route(ctx, config, limits),
  );
  server.on('clientError', (_err, socket) => socket.destroy());
  let draining = false;
  server.prependListener('request', (_req, res: http.ServerResponse) => {
    if (draining) res.setHeader('Connection', 'close');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `https://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`,
        setMaterial: (m) =>
          server.setSecureContext({ cert: m.cert, key: m.key, minVersion: 'TLSv1.2' }),
        drain: () => {
          draining = true;
        },
        close: () => closeGracefully(server),
      });
    });
  });
}

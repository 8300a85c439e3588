import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { BodyError, clientErrorHandler, closeGracefully, listenOn, readBody } from '../common/http';
import { REDACT_PATHS, type Logger } from '../common/logger';
import type { KmsCore } from '../kms/core';
import { KmsError, missingParameter } from '../kms/errors';
import { ownEntry } from '../kms/validate';
import { RateLimiter } from '../kms/rate-limit';
import { ACTIONS, type ActionContext } from './actions';
import { Authenticator } from './authenticate';
import { Params } from './params';
import { STS_VERSION, type StsService } from './sts';
import { toXml } from './xml';

export const API_VERSION = '2016-01-20';
const HOST_ID = 'kms.datakey.local';
export const MAX_BODY_BYTES = 64 * 1024;

export interface Credentials {
  accessKeyId: string;
  accessKeySecret: string;
}

/** Credentials of the one account, from DATAKEY_ACCESS_KEY_ID / DATAKEY_ACCESS_KEY_SECRET. */
export function credentialsFromEnv(env: NodeJS.ProcessEnv = process.env): Credentials {
  const accessKeyId = env.DATAKEY_ACCESS_KEY_ID ?? '';
  const accessKeySecret = env.DATAKEY_ACCESS_KEY_SECRET ?? '';
  const missing = [
    !accessKeyId && 'DATAKEY_ACCESS_KEY_ID',
    !accessKeySecret && 'DATAKEY_ACCESS_KEY_SECRET',
  ].filter(Boolean);
  if (missing.length > 0) {
    throw new Error(`missing credentials: set ${missing.join(' and ')} in the environment`);
  }
  return { accessKeyId, accessKeySecret };
}

export interface KmsApiOptions {
  core: KmsCore;
  credentials: Credentials;
  logger: Logger;
  /** Calls per second per account per operation; 0 = unlimited. */
  rateLimit: number;
  defaultRegionId?: string;
  nowMs?: () => number;
  /** Also answers STS AssumeRoleWithOIDC, and accepts the temporary credentials it issues. */
  sts?: StsService;
}

interface Reply {
  status: number;
  root: string;
  body: Record<string, unknown>;
  xml: boolean;
  code?: string;
  keyId?: string;
  action?: string;
}

/** The request handler of the Alibaba-compatible RPC API over a KMS core. */
export class KmsApi {
  private readonly limiter: RateLimiter;
  private readonly auth: Authenticator;
  private readonly accountId: string;
  private readonly accessLog: AccessLogger;

  constructor(private readonly options: KmsApiOptions) {
    this.limiter = new RateLimiter(options.rateLimit);
    this.accessLog = accessLoggerOf(options.logger);
    this.auth = new Authenticator(
      options.credentials,
      options.nowMs ?? Date.now,
      options.sts?.credentials,
    );
    this.accountId = accountIdOf(options.credentials.accessKeyId);
  }

  readonly handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const started = performance.now();
    const requestId = randomUUID();
    readBody(req, MAX_BODY_BYTES).then(
      async (body) => this.send(res, requestId, started, await this.reply(req, body)),
      (err: BodyError) => this.send(res, requestId, started, errorReply(kmsBodyError(err), false)),
    );
  };

  private async reply(req: http.IncomingMessage, body: Buffer): Promise<Reply> {
    // Until the caller is authenticated, only an explicit Format=XML changes the error's shape.
    let xml = false;
    let action: string | undefined;
    try {
      if (req.method !== 'GET' && req.method !== 'POST') {
        throw new KmsError(405, 'UnsupportedHTTPMethod', 'Only GET and POST are supported.');
      }
      const params = Params.merge([queryOf(req.url ?? '/'), formBodyOf(req, body)]);
      xml = params.optional('Format')?.toUpperCase() === 'XML';
      const sts = this.stsReply(params);
      if (sts) return { ...(await sts), xml };
      const signed = this.auth.authenticate(
        { method: req.method, url: req.url ?? '/', headers: req.headers },
        params,
        body,
      );
      xml = formatOf(params) === 'XML';
      if (!signed.version) throw missingParameter('Version');
      if (signed.version !== API_VERSION) {
        throw new KmsError(400, 'InvalidVersion', 'Specified parameter Version is not valid.');
      }
      if (!signed.action) throw missingParameter('Action');
      action = signed.action;
      const handler = ownEntry(ACTIONS, action);
      if (!handler) {
        throw new KmsError(404, 'InvalidAction.NotFound', 'Specified api is not found.');
      }
      this.limiter.take(this.options.credentials.accessKeyId, action);
      // A key another replica made or rotated a moment ago is found after a reload.
      const result = await this.options.core.whenFresh(() =>
        handler(params, this.contextOf(params)),
      );
      return {
        status: 200,
        root: `${action}Response`,
        body: result.body,
        xml,
        keyId: result.keyId,
        action,
      };
    } catch (err) {
      return { ...this.errorReply(err, xml, action), action };
    }
  }

  /** STS's AssumeRoleWithOIDC is unsigned (the OIDC token is the proof); only with STS on. */
  private stsReply(params: Params): Promise<Reply> | undefined {
    const sts = this.options.sts;
    const action = params.optional('Action');
    if (!sts || action !== 'AssumeRoleWithOIDC' || params.optional('Version') !== STS_VERSION) {
      return undefined;
    }
    this.limiter.take('sts', action);
    return sts
      .assumeRoleWithOidc(params, (this.options.nowMs ?? Date.now)())
      .then((body) => ({ status: 200, root: `${action}Response`, body, xml: false, action }));
  }

  /** A 500 is logged at error level with its cause; its body says nothing about it. */
  private errorReply(err: unknown, xml: boolean, action?: string): Reply {
    if (!(err instanceof KmsError)) {
      this.options.logger.error({ err, action }, 'kms request failed unexpectedly');
    }
    return errorReply(err, xml);
  }

  private contextOf(params: Params): ActionContext {
    const region = params.optional('RegionId');
    return {
      core: this.options.core,
      regionId:
        region && /^[a-z0-9-]{1,64}$/.test(region)
          ? region
          : (this.options.defaultRegionId ?? 'cn-hangzhou'),
      accountId: this.accountId,
    };
  }

  private send(res: http.ServerResponse, requestId: string, started: number, reply: Reply): void {
    const body = { RequestId: requestId, ...reply.body };
    const text = reply.xml ? toXml(reply.root, body) : JSON.stringify(body);
    res.writeHead(reply.status, {
      'content-type': reply.xml
        ? 'application/xml;charset=utf-8'
        : 'application/json;charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'x-acs-request-id': requestId,
    });
    res.end(text);
    this.accessLog.info(
      {
        requestId,
        action: reply.action,
        keyId: reply.keyId,
        status: reply.status,
        code: reply.code,
        ms: Math.round((performance.now() - started) * 100) / 100,
      },
      'kms request',
    );
  }
}

/** One access-log line per request; every value is a primitive, by type. */
type AccessRecord = Record<string, string | number | undefined>;
interface AccessLogger {
  info(record: AccessRecord, msg: string): void;
}

/**
 * The access log: a child of `logger` that keeps every redaction path without a
 * wildcard and drops the wildcard ones (`*.f`, `*.*.f`). Those can only match
 * inside nested objects, and an access record has none, so its lines are
 * byte-identical to the parent's; but pino runs the wildcard redactor over every
 * value of every line, about 45 µs a line, which was over half of the server's
 * CPU time per GenerateDataKeyWithoutPlaintext.
 */
export function accessLoggerOf(logger: Logger): AccessLogger {
  const paths = REDACT_PATHS.filter((p) => !p.includes('*'));
  return logger.child({}, { redact: { paths, censor: '[redacted]' } });
}

function errorReply(err: unknown, xml: boolean): Reply {
  const error =
    err instanceof KmsError
      ? err
      : new KmsError(
          500,
          'InternalFailure',
          'The request processing has failed due to some unknown error.',
        );
  return {
    status: error.httpStatus,
    root: 'Error',
    body: { HostId: HOST_ID, Code: error.code, Message: error.message },
    xml,
    code: error.code,
  };
}

/** `Format` is case-insensitive; absent or empty means JSON, the default. */
function formatOf(params: Params): 'JSON' | 'XML' {
  const format = (params.optional('Format') || 'JSON').toUpperCase();
  if (format !== 'JSON' && format !== 'XML') {
    throw new KmsError(400, 'InvalidParameter', 'The specified parameter Format is not valid.');
  }
  return format;
}

function queryOf(url: string): string {
  const at = url.indexOf('?');
  return at < 0 ? '' : url.slice(at + 1);
}

function formBodyOf(req: http.IncomingMessage, body: Buffer): string {
  if (body.length === 0) return '';
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new KmsError(
      415,
      'UnsupportedMediaType',
      'A request body must be application/x-www-form-urlencoded.',
    );
  }
  return body.toString('utf8');
}

/** A stable, numeric account id derived from the access key id, echoed in ARNs. */
export function accountIdOf(accessKeyId: string): string {
  let hash = 0n;
  for (const c of Buffer.from(accessKeyId, 'utf8')) hash = (hash * 131n + BigInt(c)) % 10n ** 16n;
  return hash.toString().padStart(16, '1');
}

export interface ListenOptions {
  host: string;
  port: number;
  tlsCertFile?: string;
  tlsKeyFile?: string;
}

export interface RunningServer {
  server: http.Server;
  url: string;
  close(timeoutMs?: number): Promise<void>;
}

/** Serves `api` over HTTP, or HTTPS when a certificate and key are given. */
export async function listen(api: KmsApi, options: ListenOptions): Promise<RunningServer> {
  const serverOptions = {
    maxHeaderSize: 64 * 1024,
    keepAliveTimeout: 30_000,
    requestTimeout: 30_000,
  };
  const server =
    options.tlsCertFile && options.tlsKeyFile
      ? https.createServer(
          {
            ...serverOptions,
            cert: readFileSync(options.tlsCertFile),
            key: readFileSync(options.tlsKeyFile),
          },
          api.handle,
        )
      : http.createServer(serverOptions, api.handle);
  server.on('clientError', answerClientError);
  const scheme = server instanceof https.Server ? 'https' : 'http';
  const { url } = await listenOn(server, options.host, options.port, scheme);
  return { server, url, close: (t) => closeGracefully(server, t) };
}

/** Parser-refused requests get an Alibaba error body too. */
const answerClientError = clientErrorHandler((_status, code, message, requestId) => ({
  contentType: 'application/json;charset=utf-8',
  body: Buffer.from(
    JSON.stringify({ RequestId: requestId, HostId: HOST_ID, Code: code, Message: message }),
  ),
  headers: { 'x-acs-request-id': requestId },
}));

function kmsBodyError(err: BodyError): KmsError {
  return err.status === 413
    ? new KmsError(413, 'RequestTooLarge', err.message)
    : new KmsError(400, 'InvalidRequest', err.message);
}

import { randomUUID, verify } from 'node:crypto';
import type * as http from 'node:http';
import * as https from 'node:https';
import { BodyError, clientErrorHandler, closeGracefully, listenOn, readBody } from '../common/http';
import type { Logger } from '../common/logger';
import type { KmsCore } from '../kms/core';
import { KmsError, missingParameter } from '../kms/errors';
import type { KmsInstance } from '../kms/instance';
import { ERROR, MESSAGES, UNSUPPORTED_OPERATIONS, type OperationName } from './messages';
import { OPERATIONS } from './operations';
import { ProtobufError, decode, encode, type Message } from './protobuf';
import { API_VERSION, PROTOBUF, contentSha256, stringToSign } from './signature';

/**
 * The KMS Instance API (dkms-gcs-0.2) over the core's KMS instance: protobuf
 * over TLS, each request signed with the client key's RSA key
 * (RSASSA-PKCS1-v1_5 SHA-256 over StringToSign), authorised by the client key's
 * validity and its access point's policies (resource, permission template,
 * network rule on the caller's address). Every error is a protobuf `Error`.
 */

export const MAX_BODY_BYTES = 64 * 1024;
const SKEW_MS = 15 * 60 * 1000;

export interface InstanceApiOptions {
  core: KmsCore;
  instance: KmsInstance;
  logger: Logger;
  nowMs?: () => number;
  /**
   * Re-reads the key store (operator: another replica may have created the
   * client key); called for an unknown client key, at most every 5 s.
   */
  refresh?: () => Promise<void>;
}

const REFRESH_INTERVAL_MS = 5_000;

interface Authorised {
  clientKeyId: string;
  address: string;
}

const refuse = (status: number, code: string, message: string) =>
  new KmsError(status, code, message);

export class InstanceApi {
  private readonly nowMs: () => number;
  private lastRefresh = -Infinity;

  constructor(private readonly options: InstanceApiOptions) {
    this.nowMs = options.nowMs ?? Date.now;
  }

  readonly handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const requestId = randomUUID();
    const started = performance.now();
    readBody(req, MAX_BODY_BYTES).then(
      (body) => this.answer(req, res, requestId, started, body),
      (err: BodyError) => this.sendError(res, requestId, started, undefined, bodyError(err)),
    );
  };

  private async answer(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    requestId: string,
    started: number,
    body: Buffer,
  ): Promise<void> {
    let operation: string | undefined;
    try {
      operation = this.checkHeaders(req, body);
      await this.refreshForUnknownClientKey(req);
      const caller = this.authenticate(req);
      const name = operation as OperationName;
      const request = decodeRequest(name, body);
      // A key another replica made or rotated a moment ago is found after a reload.
      const response = await this.options.core.whenFresh(() => this.run(name, request, caller));
      response.RequestId = requestId;
      const bytes = encode(MESSAGES[name].response, response);
      zeroSecrets(response);
      res.writeHead(200, { 'content-type': PROTOBUF, 'content-length': bytes.length });
      res.end(bytes, () => bytes.fill(0));
      this.log(requestId, started, operation, 200, undefined, caller.clientKeyId);
    } catch (err) {
      this.sendError(res, requestId, started, operation, err);
    } finally {
      body.fill(0); // it may hold a caller's Plaintext (Encrypt)
    }
  }

  /** Returns the operation named by a well-formed request; throws the documented errors. */
  private checkHeaders(req: http.IncomingMessage, body: Buffer): string {
    if (req.method !== 'POST') {
      throw refuse(405, 'UnsupportedHTTPMethod', 'Only POST is supported.');
    }
    if ((req.url ?? '/').split('?')[0] !== '/') {
      throw refuse(404, 'InvalidPath', 'The only path is /.');
    }
    const version = header(req, 'x-kms-apiversion');
    if (version !== API_VERSION) {
      throw refuse(400, 'InvalidApiVersion', `The Param x-kms-apiversion must be ${API_VERSION}.`);
    }
    const operation = header(req, 'x-kms-apiname');
    if (UNSUPPORTED_OPERATIONS.has(operation)) {
      throw refuse(400, 'UnsupportedOperation', `The operation ${operation} is not supported.`);
    }
    if (!Object.hasOwn(MESSAGES, operation)) {
      throw refuse(400, 'InvalidApiName', 'The Param x-kms-apiname is invalid.');
    }
    if (header(req, 'x-kms-signaturemethod') !== 'RSA_PKCS1_SHA_256') {
      throw refuse(400, 'InvalidParam', 'The Param x-kms-signaturemethod is invalid.');
    }
    if (header(req, 'content-type').split(';')[0].trim().toLowerCase() !== PROTOBUF) {
      throw refuse(400, 'InvalidParam', `The Param content-type must be ${PROTOBUF}.`);
    }
    const at = Date.parse(header(req, 'date'));
    if (!header(req, 'date') || Number.isNaN(at)) {
      throw refuse(400, 'InvalidParam', 'The Param Date is invalid.');
    }
    if (Math.abs(this.nowMs() - at) > SKEW_MS) {
      throw refuse(
        400,
        'RequestTimeTooSkewed',
        'The Date header is more than 15 minutes away from the server time.',
      );
    }
    if (header(req, 'content-sha256') !== contentSha256(body)) {
      throw refuse(400, 'InvalidParam', 'The Param content-sha256 is invalid.');
    }
    return operation;
  }

  private async refreshForUnknownClientKey(req: http.IncomingMessage): Promise<void> {
    const clientKeyId = header(req, 'x-kms-acccesskeyid');
    const { refresh, instance } = this.options;
    if (!refresh || !clientKeyId || instance.findClientKey(clientKeyId)) return;
    if (this.nowMs() - this.lastRefresh < REFRESH_INTERVAL_MS) return;
    this.lastRefresh = this.nowMs();
    await refresh().catch((err: Error) =>
      this.options.logger.warn({ err: err.message }, 'key store refresh failed'),
    );
  }

  /** Checks the client key and the request signature. */
  private authenticate(req: http.IncomingMessage): Authorised {
    const clientKeyId = header(req, 'x-kms-acccesskeyid');
    if (!clientKeyId) {
      throw refuse(
        400,
        'MissingParameter',
        'Parameter x-kms-acccesskeyid does not exist in http header or body.',
      );
    }
    const authorization = header(req, 'authorization');
    if (!authorization.startsWith('Bearer ') || authorization.length > 4096) {
      throw refuse(
        400,
        'MissingParameter',
        'Parameter authorization must be "Bearer <signature>".',
      );
    }
    const found = this.options.instance.findClientKey(clientKeyId);
    if (!found) {
      throw refuse(401, 'InvalidAccessKeyId.NotFound', 'The client key is not found.');
    }
    const now = this.nowMs();
    if (now < Date.parse(found.clientKey.notBefore)) {
      throw refuse(
        401,
        'InvalidAccessKeyId.Inactive',
        'The client key is not valid yet (NotBefore).',
      );
    }
    if (now > Date.parse(found.clientKey.notAfter)) {
      throw refuse(401, 'InvalidAccessKeyId.Expired', 'The client key has expired (NotAfter).');
    }
    const signature = Buffer.from(authorization.slice('Bearer '.length).trim(), 'base64');
    const signed = verify(
      'sha256',
      Buffer.from(stringToSign(signedHeadersOf(req)), 'utf8'),
      found.publicKey,
      signature,
    );
    if (!signed) {
      throw refuse(401, 'SignatureDoesNotMatch', 'The request signature does not verify.');
    }
    return { clientKeyId, address: req.socket.remoteAddress ?? '' };
  }

  /** Refuses unless a policy of the caller's access point allows `keyId` from its address. */
  private authorise(caller: Authorised, operation: string, keyId: string | undefined): void {
    const instance = this.options.instance;
    const clientKey = instance.clientKey(caller.clientKeyId);
    const resource = keyId === undefined ? undefined : `key/${keyId}`;
    const refusal = instance.refusal(clientKey, resource, caller.address);
    const target = resource ?? 'the instance';
    if (refusal === 'policy') {
      throw refuse(
        403,
        'Forbidden.NoPermission',
        `No policy of the client key's access point allows ${operation} on ${target}.`,
      );
    }
    if (refusal === 'network') {
      throw refuse(
        403,
        'Forbidden.SourceIpNotAllowed',
        `The caller address ${caller.address} matches no network rule of the policies for ${target}.`,
      );
    }
  }

  private run(name: OperationName, req: Message, caller: Authorised): Message {
    return OPERATIONS[name](req, {
      core: this.options.core,
      usableKey: (request) => this.keyOf(caller, name, request),
      authorise: (keyId) => this.authorise(caller, name, keyId),
    });
  }

  /** Resolves the request's KeyId to an instance key and authorises its use. */
  private keyOf(caller: Authorised, operation: string, req: Message): string {
    const named = (req.KeyId as string | undefined) ?? '';
    if (!named) throw missingParameter('KeyId');
    const key = this.options.core.instanceKey(named);
    this.authorise(caller, operation, key.keyId);
    return key.keyId;
  }

  private sendError(
    res: http.ServerResponse,
    requestId: string,
    started: number,
    operation: string | undefined,
    err: unknown,
  ): void {
    const error =
      err instanceof KmsError
        ? err
        : new KmsError(500, 'InternalFailure', 'The request processing has failed.');
    if (!(err instanceof KmsError)) {
      this.options.logger.error({ err: (err as Error).message, requestId }, 'instance api failure');
    }
    const body = encode(ERROR, {
      StatusCode: error.httpStatus,
      ErrorCode: error.code,
      ErrorMessage: error.message,
      RequestId: requestId,
    });
    res.writeHead(error.httpStatus, { 'content-type': PROTOBUF, 'content-length': body.length });
    res.end(body);
    this.log(requestId, started, operation, error.httpStatus, error.code);
  }

  private log(
    requestId: string,
    started: number,
    operation: string | undefined,
    status: number,
    code?: string,
    clientKeyId?: string,
  ): void {
    this.options.logger.info(
      {
        requestId,
        operation: operation && Object.hasOwn(MESSAGES, operation) ? operation : undefined,
        clientKeyId,
        status,
        code,
        ms: Math.round((performance.now() - started) * 100) / 100,
      },
      'kms instance request',
    );
  }
}

function header(req: http.IncomingMessage, name: string): string {
  const value = req.headers[name];
  return typeof value === 'string' ? value.trim() : '';
}

/** The request's headers as StringToSign reads them: the standard three and every x-kms-*. */
function signedHeadersOf(req: http.IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = Object.create(null);
  for (const name of Object.keys(req.headers)) {
    if (name.startsWith('x-kms-') || SIGNED.has(name)) headers[name] = header(req, name);
  }
  return headers;
}
const SIGNED = new Set(['content-sha256', 'content-type', 'date']);

function decodeRequest(name: OperationName, body: Buffer): Message {
  try {
    return decode(MESSAGES[name].request, body);
  } catch (err) {
    if (err instanceof ProtobufError) {
      throw refuse(
        400,
        'InvalidParam',
        `The request body is not a valid ${name}Request message: ${err.message}.`,
      );
    }
    throw err;
  }
}

function zeroSecrets(response: Message): void {
  for (const name of ['Plaintext', 'Random']) {
    const value = response[name];
    if (Buffer.isBuffer(value)) value.fill(0);
  }
}

function bodyError(err: BodyError): KmsError {
  return err.status === 413
    ? refuse(413, 'RequestTooLarge', `The request body exceeds ${MAX_BODY_BYTES} bytes.`)
    : refuse(400, 'InvalidRequest', err.message);
}

export interface InstanceListenOptions {
  host: string;
  port: number;
  /** Extra DNS names or addresses for the endpoint certificate (--instance-host). */
  hosts?: string[];
}

export interface RunningInstanceApi {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Hosts the endpoint certificate covers: the listen address, localhost and the extra names. */
export function certificateHosts(options: InstanceListenOptions): string[] {
  const wildcard = options.host === '0.0.0.0' || options.host === '::';
  return [
    ...new Set([
      ...(wildcard ? [] : [options.host]),
      'localhost',
      '127.0.0.1',
      '::1',
      ...(options.hosts ?? []),
    ]),
  ];
}

/** Serves the Instance API over TLS with a certificate issued by the instance CA. */
export async function listenInstanceApi(
  api: InstanceApi,
  instance: KmsInstance,
  options: InstanceListenOptions,
): Promise<RunningInstanceApi> {
  const { cert, key } = instance.issueServerCertificate(certificateHosts(options));
  const server = https.createServer(
    { cert, key, maxHeaderSize: 64 * 1024, keepAliveTimeout: 30_000, requestTimeout: 30_000 },
    api.handle,
  );
  server.on('clientError', answerClientError);
  const { url, port } = await listenOn(server, options.host, options.port, 'https');
  return { url, port, close: () => closeGracefully(server) };
}

/** Parser-refused requests get a protobuf Error too. */
const answerClientError = clientErrorHandler((status, code, message, requestId) => ({
  contentType: PROTOBUF,
  body: encode(ERROR, {
    StatusCode: status,
    ErrorCode: code,
    ErrorMessage: message,
    RequestId: requestId,
  }),
}));

/** Creates the core's KMS instance on first start and serves the Instance API over it. */
export async function startInstanceApi(
  core: KmsCore,
  options: InstanceListenOptions,
  logger: Logger,
  refresh?: () => Promise<void>,
): Promise<RunningInstanceApi> {
  const instance = await core.ensureInstance();
  const api = new InstanceApi({ core, instance, logger, refresh });
  const running = await listenInstanceApi(api, instance, options);
  logger.info({ url: running.url, kmsInstanceId: instance.id }, 'kms instance api listening');
  return running;
}

import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';

/** A request body that could not be read: too large (413), cut off (400) or not the right type (415). */
export class BodyError extends Error {
  constructor(
    readonly status: 400 | 413 | 415,
    message: string,
  ) {
    super(message);
    this.name = 'BodyError';
  }
}

/** Reads a request body up to `limit` bytes, refusing larger ones before buffering them. */
export function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new BodyError(413, `The request body exceeds ${limit} bytes.`);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      req.resume();
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', () => reject(new BodyError(400, 'The request body was cut.')));
  });
}

/** Stops accepting, lets in-flight requests finish, then drops idle keep-alive sockets. */
export function closeGracefully(server: http.Server, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), timeoutMs);
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** The error body of a protocol, for a request Node's HTTP parser refused. */
export type ErrorBodyRenderer = (
  status: number,
  code: string,
  message: string,
  requestId: string,
) => { contentType: string; body: Buffer; headers?: Record<string, string> };

/**
 * A `clientError` handler: requests that Node's HTTP parser refuses before they
 * reach the handler (headers or URL over the size limit, bytes not allowed in
 * the request line, unknown methods, timeouts) still get the protocol's error
 * body, not Node's bare default.
 */
export function clientErrorHandler(render: ErrorBodyRenderer) {
  return (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, code, message] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'RequestHeaderFieldsTooLarge', 'The request line or headers exceed 64 KiB.']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'RequestTimeout', 'The request was not received in time.']
          : [400, 'InvalidRequest', 'The request is not a well-formed HTTP request.'];
    const { contentType, body, headers = {} } = render(status, code, message, randomUUID());
    const extra = Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    socket.end(
      Buffer.concat([
        Buffer.from(
          `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n` +
            `content-type: ${contentType}\r\n` +
            `content-length: ${body.length}\r\n${extra}` +
            'connection: close\r\n\r\n',
        ),
        body,
      ]),
    );
  };
}

/** Listens on host:port (0 = any free port); resolves with the URL it serves. */
export function listenOn(
  server: http.Server,
  host: string,
  port: number,
  scheme: 'http' | 'https',
): Promise<{ url: string; port: number }> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address() as AddressInfo;
      const shown = address.address.includes(':') ? `[${address.address}]` : address.address;
      resolve({ url: `${scheme}://${shown}:${address.port}`, port: address.port });
    });
  });
}

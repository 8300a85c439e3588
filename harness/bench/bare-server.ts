import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The HTTP baseline: a bare Node http server answering every request with a fixed
 * JSON body of the same shape and size class as a GenerateDataKeyWithoutPlaintext
 * reply, with the same server options as the KMS API. Prints its port on stdout.
 */
const BODY = JSON.stringify({
  RequestId: '00000000-0000-4000-8000-000000000000',
  KeyId: '00000000-0000-4000-8000-000000000000',
  KeyVersionId: '00000000-0000-4000-8000-000000000000',
  CiphertextBlob: Buffer.alloc(37 + 12 + 32 + 16).toString('base64'),
});
const LENGTH = Buffer.byteLength(BODY);

const server = http.createServer(
  { maxHeaderSize: 64 * 1024, keepAliveTimeout: 30_000, requestTimeout: 30_000 },
  (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'application/json;charset=utf-8',
        'content-length': LENGTH,
      });
      res.end(BODY);
    });
  },
);
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));

import { randomBytes } from 'node:crypto';
import { formatKmsTime } from '../../src/kms/clock';
import { signAcs3Request } from '../../src/kms-api/acs3';
import { encodeParams, signRequest } from '../../src/kms-api/signature';

/** A request as autocannon takes it. */
export interface SignedCall {
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
}

/**
 * Builds signed Alibaba RPC requests, signature v1 or ACS3,  with the project's own signer. Every
 * call gets a fresh SignatureNonce (random per-process prefix + counter, so it is
 * unique without a CSPRNG call per request) and the current second as Timestamp.
 */
export class RequestSigner {
  private readonly noncePrefix = randomBytes(9).toString('base64url');
  private counter = 0;
  private stampSecond = -1;
  private stamp = '';

  constructor(
    private readonly accessKeyId: string,
    private readonly accessKeySecret: string,
  ) {}

  /** `/?...&Signature=...` for a GET of `action` with `extra` parameters. */
  path(action: string, extra: Record<string, string> = {}, method = 'GET'): string {
    const credentials = { accessKeyId: this.accessKeyId, accessKeySecret: this.accessKeySecret };
    const params = signRequest(credentials, action, extra, {
      method,
      nonce: `${this.noncePrefix}-${++this.counter}`,
      timestamp: this.timestamp(),
    });
    return `/?${encodeParams(params)}`;
  }

  /** A signed call in `scheme`: v1 as a GET query, ACS3 as the current SDKs send it (POST, headers). */
  call(
    scheme: 'v1' | 'ACS3',
    host: string,
    action: string,
    extra: Record<string, string> = {},
  ): SignedCall {
    if (scheme === 'v1') return { method: 'GET', path: this.path(action, extra) };
    const query = encodeParams(new Map(Object.entries(extra)));
    const credentials = { accessKeyId: this.accessKeyId, accessKeySecret: this.accessKeySecret };
    const headers = signAcs3Request(credentials, action, query, {
      host,
      date: this.timestamp(),
      nonce: `${this.noncePrefix}-${++this.counter}`,
    });
    return { method: 'POST', path: `/?${query}`, headers };
  }

  private timestamp(): string {
    const now = Date.now();
    const second = Math.floor(now / 1000);
    if (second !== this.stampSecond) {
      this.stampSecond = second;
      this.stamp = formatKmsTime(new Date(second * 1000));
    }
    return this.stamp;
  }
}

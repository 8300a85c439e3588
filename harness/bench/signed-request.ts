import { randomBytes } from 'node:crypto';
import { formatKmsTime } from '../../src/kms/clock';
import { encodeParams, signRequest } from '../../src/kms-api/signature';

/**
 * Builds signed Alibaba RPC v1 request paths with the project's own signer. Every
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

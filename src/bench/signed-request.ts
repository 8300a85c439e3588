import { randomBytes } from 'node:crypto';
import { API_VERSION } from '../kms-api/server';
import { canonicalQuery, percentEncode, signatureV1 } from '../kms-api/signature';

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
    const params = new Map<string, string>([
      ['Action', action],
      ['Version', API_VERSION],
      ['Format', 'JSON'],
      ['AccessKeyId', this.accessKeyId],
      ['SignatureMethod', 'HMAC-SHA1'],
      ['SignatureVersion', '1.0'],
      ['SignatureNonce', `${this.noncePrefix}-${++this.counter}`],
      ['Timestamp', this.timestamp()],
    ]);
    for (const [name, value] of Object.entries(extra)) params.set(name, value);
    const signature = signatureV1(method, params, this.accessKeySecret);
    return `/?${canonicalQuery(params)}&Signature=${percentEncode(signature)}`;
  }

  private timestamp(): string {
    const now = Date.now();
    const second = Math.floor(now / 1000);
    if (second !== this.stampSecond) {
      this.stampSecond = second;
      this.stamp = new Date(second * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    }
    return this.stamp;
  }
}

import { KeyStoreError } from '../kms/store';

/**
 * Why a seal operation failed; each is named in the operator's readiness and
 * in a Warning event on the root-key Secret. Nothing is written when one occurs.
 */
export type SealFailure =
  | 'SealKeyUnavailable'
  | 'SealContextMismatch'
  | 'StsRefused'
  | 'SealCredentialsRefused'
  | 'SealEndpointUnreachable'
  | 'SealKmsError'
  | 'SealBlobMalformed';

/**
 * A sealed root key that cannot be opened is stored state the operator cannot
 * use, like a damaged key store: the same guard waits on it, not Ready, and
 * never replaces it. Kept apart from the KMS client so that naming the error
 * does not load the Alibaba SDK.
 */
export class SealError extends KeyStoreError {
  constructor(
    readonly reason: SealFailure,
    message: string,
  ) {
    super(`${reason}: ${message}`);
    this.name = 'SealError';
  }
}

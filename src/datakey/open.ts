import type { DataKey, Flow } from '../api/types';
import { KmsError, type KmsCore } from '../kms';
import { boundAad, boundContext } from './identity';
import type { WrappedDataKey } from './wrapped';

/** Where calls into the core are counted, by operation and result code (the operator's metrics). */
export interface KmsCallCounter {
  inc(labels: { operation: string; code: string }): void;
}

/** Calls the core and counts the call by operation and result code. */
export function countedKmsCall<T>(counter: KmsCallCounter, operation: string, call: () => T): T {
  try {
    const result = call();
    if (result instanceof Promise) {
      return result.then(
        (value) => {
          counter.inc({ operation, code: 'OK' });
          return value;
        },
        (err: unknown) => {
          counter.inc({ operation, code: codeOf(err) });
          throw err;
        },
      ) as T;
    }
    counter.inc({ operation, code: 'OK' });
    return result;
  } catch (err) {
    counter.inc({ operation, code: codeOf(err) });
    throw err;
  }
}

const codeOf = (err: unknown) => (err instanceof KmsError ? err.code : 'Error');

export const decryptOperation = (flow: Flow) =>
  flow === 'Standard' ? 'Decrypt' : 'AdvanceDecrypt';

/**
 * Opens a stored ciphertext inside the core with the DataKey's identity binding,
 * counting the call; the caller zeroes the plaintext.
 */
export function openWrapped(
  core: KmsCore,
  dataKey: DataKey,
  wrapped: WrappedDataKey,
  counter: KmsCallCounter,
): Buffer {
  return countedKmsCall(counter, decryptOperation(wrapped.flow), () =>
    wrapped.flow === 'Standard'
      ? core.decrypt({
          ciphertextBlob: wrapped.ciphertextBlob,
          encryptionContext: boundContext(dataKey),
        }).plaintext
      : core.advanceDecrypt({ ciphertextBlob: wrapped.ciphertextBlob, aad: boundAad(dataKey) })
          .plaintext,
  );
}

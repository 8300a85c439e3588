/**
 * Alibaba-style KMS errors: an HTTP status plus a stable `Code`. Messages name the
 * offending parameter and never carry key material or plaintext.
 */
export class KmsError extends Error {
  constructor(
    readonly httpStatus: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'KmsError';
  }
}

export const invalidParameter = (name: string, why?: string): KmsError =>
  new KmsError(
    400,
    'InvalidParameter',
    `The specified parameter ${name} is not valid.${why ? ` ${why}` : ''}`,
  );

export const missingParameter = (name: string): KmsError =>
  new KmsError(400, 'MissingParameter', `The parameter ${name} is required.`);

export const keyNotFound = (keyId: string): KmsError =>
  new KmsError(404, 'Forbidden.KeyNotFound', `The specified Key ${keyId} is not found.`);

export const aliasNotFound = (alias: string): KmsError =>
  new KmsError(404, 'Forbidden.AliasNotFound', `The specified alias ${alias} is not found.`);

export const keyVersionNotFound = (versionId: string): KmsError =>
  new KmsError(
    404,
    'Forbidden.KeyVersionNotFound',
    `The specified key version ${versionId} is not found.`,
  );

export const onlySymmetric = (keyId: string): KmsError =>
  new KmsError(
    404,
    'Forbidden.OnlySymmetricKeySupported',
    `The key ${keyId} is not a symmetric key. The API only supports symmetric keys.`,
  );

export const keyDisabled = (keyId: string): KmsError =>
  new KmsError(409, 'Rejected.Disabled', `The key ${keyId} is disabled.`);

export const keyPendingDeletion = (keyId: string): KmsError =>
  new KmsError(409, 'Rejected.PendingDeletion', `The key ${keyId} is pending deletion.`);

export const aliasExists = (alias: string): KmsError =>
  new KmsError(409, 'Forbidden.AliasExists', `The alias ${alias} already exists.`);

export const dryRunOperation = (): KmsError =>
  new KmsError(
    400,
    'DryRunOperation',
    'Request would have succeeded, but the DryRun parameter was set.',
  );

export const throttled = (): KmsError =>
  new KmsError(429, 'Rejected.Throttling', 'Request was denied due to request throttling.');

/** Every failure to open a ciphertext looks the same: no oracle for what was wrong. */
export const invalidCiphertext = (parameter = 'CiphertextBlob'): KmsError =>
  invalidParameter(
    parameter,
    'The ciphertext could not be decrypted with the given encryption context or Aad.',
  );

import type { Schema } from './protobuf';

/** The dkms-gcs-0.2 messages served here (`openapi-util/protobuf/api.proto` of the Go SDK). */

export const ERROR: Schema = {
  StatusCode: [1, 'int32'],
  ErrorCode: [2, 'string'],
  ErrorMessage: [3, 'string'],
  RequestId: [4, 'string'],
};

const ENCRYPT_REQUEST: Schema = {
  KeyId: [1, 'string'],
  Plaintext: [2, 'bytes'],
  Algorithm: [3, 'string'],
  Aad: [4, 'bytes'],
  Iv: [5, 'bytes'],
  PaddingMode: [6, 'string'],
};
const DECRYPT_REQUEST: Schema = {
  CiphertextBlob: [1, 'bytes'],
  KeyId: [2, 'string'],
  Algorithm: [3, 'string'],
  Aad: [4, 'bytes'],
  Iv: [5, 'bytes'],
  PaddingMode: [6, 'string'],
};

/** The Advance responses add the key version to their plain counterpart's fields. */
const withKeyVersion = (schema: Schema, number: number): Schema => ({
  ...schema,
  KeyVersionId: [number, 'string'],
});

const ENCRYPT_RESPONSE: Schema = {
  KeyId: [1, 'string'],
  CiphertextBlob: [2, 'bytes'],
  Iv: [3, 'bytes'],
  RequestId: [4, 'string'],
  Algorithm: [5, 'string'],
  PaddingMode: [6, 'string'],
};
const DECRYPT_RESPONSE: Schema = {
  KeyId: [1, 'string'],
  Plaintext: [2, 'bytes'],
  RequestId: [3, 'string'],
  Algorithm: [4, 'string'],
  PaddingMode: [5, 'string'],
};
const GENERATE_DATA_KEY_RESPONSE: Schema = {
  KeyId: [1, 'string'],
  Iv: [2, 'bytes'],
  Plaintext: [3, 'bytes'],
  CiphertextBlob: [4, 'bytes'],
  RequestId: [5, 'string'],
  Algorithm: [6, 'string'],
};

export const MESSAGES = {
  Encrypt: { request: ENCRYPT_REQUEST, response: ENCRYPT_RESPONSE },
  AdvanceEncrypt: { request: ENCRYPT_REQUEST, response: withKeyVersion(ENCRYPT_RESPONSE, 7) },
  Decrypt: { request: DECRYPT_REQUEST, response: DECRYPT_RESPONSE },
  AdvanceDecrypt: { request: DECRYPT_REQUEST, response: withKeyVersion(DECRYPT_RESPONSE, 6) },
  GenerateDataKey: {
    request: {
      KeyId: [1, 'string'],
      Algorithm: [2, 'string'],
      NumberOfBytes: [3, 'int32'],
      Aad: [4, 'bytes'],
    },
    response: GENERATE_DATA_KEY_RESPONSE,
  },
  AdvanceGenerateDataKey: {
    request: {
      KeyId: [1, 'string'],
      NumberOfBytes: [2, 'int32'],
      Aad: [3, 'bytes'],
    },
    response: withKeyVersion(GENERATE_DATA_KEY_RESPONSE, 7),
  },
  GenerateRandom: {
    request: { Length: [1, 'int32'] },
    response: { Random: [1, 'bytes'], RequestId: [2, 'string'] },
  },
} as const satisfies Record<string, { request: Schema; response: Schema }>;

export type OperationName = keyof typeof MESSAGES;

/** Operations of the API that this server does not implement (asymmetric keys, secrets). */
export const UNSUPPORTED_OPERATIONS = new Set([
  'Sign',
  'Verify',
  'Hmac',
  'GetPublicKey',
  'GetSecretValue',
  'GenerateDataKeyPair',
  'GenerateDataKeyPairWithoutPlaintext',
  'AdvanceGenerateDataKeyPair',
  'AdvanceGenerateDataKeyPairWithoutPlaintext',
]);

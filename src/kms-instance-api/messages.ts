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

export const MESSAGES = {
  Encrypt: {
    request: ENCRYPT_REQUEST,
    response: {
      KeyId: [1, 'string'],
      CiphertextBlob: [2, 'bytes'],
      Iv: [3, 'bytes'],
      RequestId: [4, 'string'],
      Algorithm: [5, 'string'],
      PaddingMode: [6, 'string'],
    },
  },
  AdvanceEncrypt: {
    request: ENCRYPT_REQUEST,
    response: {
      KeyId: [1, 'string'],
      CiphertextBlob: [2, 'bytes'],
      Iv: [3, 'bytes'],
      RequestId: [4, 'string'],
      Algorithm: [5, 'string'],
      PaddingMode: [6, 'string'],
      KeyVersionId: [7, 'string'],
    },
  },
  Decrypt: {
    request: DECRYPT_REQUEST,
    response: {
      KeyId: [1, 'string'],
      Plaintext: [2, 'bytes'],
      RequestId: [3, 'string'],
      Algorithm: [4, 'string'],
      PaddingMode: [5, 'string'],
    },
  },
  AdvanceDecrypt: {
    request: DECRYPT_REQUEST,
    response: {
      KeyId: [1, 'string'],
      Plaintext: [2, 'bytes'],
      RequestId: [3, 'string'],
      Algorithm: [4, 'string'],
      PaddingMode: [5, 'string'],
      KeyVersionId: [6, 'string'],
    },
  },
  GenerateDataKey: {
    request: {
      KeyId: [1, 'string'],
      Algorithm: [2, 'string'],
      NumberOfBytes: [3, 'int32'],
      Aad: [4, 'bytes'],
    },
    response: {
      KeyId: [1, 'string'],
      Iv: [2, 'bytes'],
      Plaintext: [3, 'bytes'],
      CiphertextBlob: [4, 'bytes'],
      RequestId: [5, 'string'],
      Algorithm: [6, 'string'],
    },
  },
  AdvanceGenerateDataKey: {
    request: {
      KeyId: [1, 'string'],
      NumberOfBytes: [2, 'int32'],
      Aad: [3, 'bytes'],
    },
    response: {
      KeyId: [1, 'string'],
      Iv: [2, 'bytes'],
      Plaintext: [3, 'bytes'],
      CiphertextBlob: [4, 'bytes'],
      RequestId: [5, 'string'],
      Algorithm: [6, 'string'],
      KeyVersionId: [7, 'string'],
    },
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

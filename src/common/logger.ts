import pino, { type Logger } from 'pino';

/**
 * Field names that could carry key material, plaintext or credentials. They are
 * never logged on purpose; redaction is the second line of defence.
 */
const SECRET_FIELDS = [
  'plaintext',
  'Plaintext',
  'ciphertextBlob',
  'CiphertextBlob',
  'material',
  'rootKey',
  'key',
  'secret',
  'accessKeySecret',
  'AccessKeySecret',
  'Signature',
  'signature',
  'token',
  'password',
  'Password',
  'PrivateKeyData',
  'privateKeyData',
  'Random',
  'authorization',
  'Aad',
  'aad',
];

export const REDACT_PATHS = [
  ...SECRET_FIELDS,
  ...SECRET_FIELDS.map((f) => `*.${f}`),
  ...SECRET_FIELDS.map((f) => `*.*.${f}`),
  'req.headers.authorization',
  'req.headers.cookie',
];

export function createLogger(
  name: string,
  options: { level?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const level = options.level ?? process.env.DATAKEY_LOG_LEVEL ?? 'info';
  const config = { name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } };
  return options.destination ? pino(config, options.destination) : pino(config);
}

export type { Logger };

import { randomBytes } from 'node:crypto';
import { createLogger } from '../../src/common/logger';
import { KmsCore } from '../../src/kms/core';
import { RootKey } from '../../src/kms/root-key';
import { MemoryKeyStore } from '../../src/kms/store';
import { KmsApi, accessLoggerOf, listen } from '../../src/kms-api/server';
import { encodeParams, signedParams } from '../helpers/raw-request';

const credentials = { accessKeyId: 'test-id', accessKeySecret: 'test-secret' };

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('kms-api', {
    level: 'info',
    destination: { write: (line: string) => void lines.push(JSON.parse(line)) },
  });
  return { lines, logger };
}

function signedPath(action: string, extra: Record<string, string>): string {
  return `/?${encodeParams(signedParams(credentials, action, extra))}`;
}

test('the access log line is what the fully redacting logger writes for it', async () => {
  const { lines, logger } = capture();
  const core = await KmsCore.open({
    store: new MemoryKeyStore(),
    rootKey: new RootKey(randomBytes(32)),
  });
  const { keyId } = await core.createKey({});
  const api = new KmsApi({ core, credentials, logger, rateLimit: 0 });
  const running = await listen(api, { host: '127.0.0.1', port: 0 });
  try {
    const res = await fetch(
      running.url + signedPath('GenerateDataKeyWithoutPlaintext', { KeyId: keyId }),
    );
    expect(res.status).toBe(200);
    await res.json();
  } finally {
    await running.close();
  }
  const access = lines.find((l) => l.msg === 'kms request');
  expect(access).toMatchObject({ action: 'GenerateDataKeyWithoutPlaintext', keyId, status: 200 });

  const { level: _l, time: _t, pid: _p, hostname: _h, name: _n, msg, ...record } = access ?? {};
  logger.info(record, msg as string);
  const { time: _t1, ...viaParent } = lines[lines.length - 1];
  const { time: _t2, ...viaAccess } = access ?? {};
  expect(JSON.stringify(viaAccess)).toBe(JSON.stringify(viaParent));
});

test('the access logger still redacts top-level secret fields', () => {
  const { lines, logger } = capture();
  accessLoggerOf(logger).info(
    { plaintext: 'p', Signature: 's', accessKeySecret: 'k', keyId: 'id' },
    'm',
  );
  expect(lines[0]).toMatchObject({
    plaintext: '[redacted]',
    Signature: '[redacted]',
    accessKeySecret: '[redacted]',
    keyId: 'id',
  });
});

test('a 500 is logged at error level with its cause; the body says nothing about it', async () => {
  const { lines, logger } = capture();
  const core = await KmsCore.open({
    store: new MemoryKeyStore(),
    rootKey: new RootKey(randomBytes(32)),
  });
  core.describeKey = () => {
    throw new TypeError('a bug in the core');
  };
  const api = new KmsApi({ core, credentials, logger, rateLimit: 0 });
  const running = await listen(api, { host: '127.0.0.1', port: 0 });
  let body: Record<string, unknown>;
  try {
    const res = await fetch(running.url + signedPath('DescribeKey', { KeyId: 'any' }));
    expect(res.status).toBe(500);
    body = (await res.json()) as Record<string, unknown>;
  } finally {
    await running.close();
  }
  expect(body).toMatchObject({ Code: 'InternalFailure' });
  expect(JSON.stringify(body)).not.toContain('a bug in the core');
  const failure = lines.find((l) => l.msg === 'kms request failed unexpectedly');
  expect(failure).toMatchObject({
    level: 50,
    action: 'DescribeKey',
    err: { type: 'TypeError', message: 'a bug in the core' },
  });
});

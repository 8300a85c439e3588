import { X509Certificate } from 'node:crypto';
import { MESSAGES } from '../../src/kms-instance-api/messages';
import { decode, encode } from '../../src/kms-instance-api/protobuf';
import {
  rawClientKey,
  sendInstanceRequest,
  signedInstanceRequest,
} from '../helpers/instance-client';
import { instanceOf, openApiClient, provision } from '../helpers/instance-provisioning';
import { startKms } from '../helpers/kms-process';

/**
 * The instance (id, CA), its access chain and its keys live in the data dir
 * like every other record: after kill -9 and a restart the same client key
 * works against the same CA, and a blob made before still opens.
 */

test('the KMS instance survives kill -9 of kms serve', async () => {
  const args = ['--instance-listen', '127.0.0.1:0'];
  const first = await startKms({ args });
  const p = await provision(first);
  const key = rawClientKey(p.clients.good);
  const generate = encode(MESSAGES.AdvanceGenerateDataKey.request, {
    KeyId: p.keyId,
    NumberOfBytes: 32,
    Aad: Buffer.from('a'),
  });
  const made = await sendInstanceRequest(
    first.instanceUrl as string,
    p.ca,
    signedInstanceRequest(key, 'AdvanceGenerateDataKey', generate),
  );
  expect(made.status).toBe(200);
  const generated = decode(MESSAGES.AdvanceGenerateDataKey.response, made.body);
  await first.kill9();

  const second = await startKms({ dataDir: first.dataDir, args });
  const again = await instanceOf(second);
  expect(again).toEqual({ instanceId: p.instanceId, ca: p.ca });
  const call = openApiClient(second);
  const clientKeyId = JSON.parse(p.clients.good.content).KeyId as string;
  expect((await call('GetClientKey', { ClientKeyId: clientKeyId })).ClientKeyId).toBe(clientKeyId);
  const described = await call('DescribeKey', { KeyId: p.keyId });
  expect(described.KeyMetadata.DKMSInstanceId).toBe(p.instanceId);

  const decrypt = encode(MESSAGES.AdvanceDecrypt.request, {
    CiphertextBlob: generated.CiphertextBlob as Buffer,
    Aad: Buffer.from('a'),
  });
  const opened = await sendInstanceRequest(
    second.instanceUrl as string,
    again.ca,
    signedInstanceRequest(key, 'AdvanceDecrypt', decrypt),
  );
  expect(opened.status).toBe(200);
  const plaintext = decode(MESSAGES.AdvanceDecrypt.response, opened.body).Plaintext as Buffer;
  expect(plaintext.equals(generated.Plaintext as Buffer)).toBe(true);
  // The endpoint certificate is issued by the persisted CA at every start.
  expect(new X509Certificate(again.ca).ca).toBe(true);
  await second.stop();
}, 60_000);

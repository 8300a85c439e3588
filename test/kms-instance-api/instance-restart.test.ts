import { X509Certificate } from 'node:crypto';
import { MESSAGES } from '../../src/kms-instance-api/messages';
import { decode, encode, type Message } from '../../src/kms-instance-api/protobuf';
import {
  rawClientKey,
  sendInstanceRequest,
  signedInstanceRequest,
  type RawClientKey,
} from '../helpers/instance-client';
import { instanceOf, openApiClient, provision } from '../helpers/instance-provisioning';
import { startKms } from '../helpers/kms-process';

/**
 * The instance (id, CA), its access chain and its keys live in the data dir
 * like every other record: after kill -9 and a restart the same client key
 * works against the same CA, and a blob made before still opens.
 */

/** One signed call; the decoded response of a 200. */
async function instanceCall(
  url: string | undefined,
  ca: string,
  key: RawClientKey,
  operation: 'AdvanceGenerateDataKey' | 'AdvanceDecrypt',
  message: Message,
): Promise<Message> {
  const body = encode(MESSAGES[operation].request, message);
  const res = await sendInstanceRequest(
    url as string,
    ca,
    signedInstanceRequest(key, operation, body),
  );
  expect(res.status).toBe(200);
  return decode(MESSAGES[operation].response, res.body);
}

test('the KMS instance survives kill -9 of kms serve', async () => {
  const args = ['--instance-listen', '127.0.0.1:0'];
  const first = await startKms({ args });
  const p = await provision(first);
  const key = rawClientKey(p.clients.good);
  const aad = Buffer.from('a');
  const generated = await instanceCall(first.instanceUrl, p.ca, key, 'AdvanceGenerateDataKey', {
    KeyId: p.keyId,
    NumberOfBytes: 32,
    Aad: aad,
  });
  await first.kill9();

  const second = await startKms({ dataDir: first.dataDir, args });
  const again = await instanceOf(second);
  expect(again).toEqual({ instanceId: p.instanceId, ca: p.ca });
  const got = await openApiClient(second)('GetKmsInstance', { KmsInstanceId: p.instanceId });
  expect(got.KmsInstance.KeyNum).toBe(2); // the two keys provision() made in the instance
  const call = openApiClient(second);
  const clientKeyId = JSON.parse(p.clients.good.content).KeyId as string;
  expect((await call('GetClientKey', { ClientKeyId: clientKeyId })).ClientKeyId).toBe(clientKeyId);
  const described = await call('DescribeKey', { KeyId: p.keyId });
  expect(described.KeyMetadata.DKMSInstanceId).toBe(p.instanceId);

  const opened = await instanceCall(second.instanceUrl, again.ca, key, 'AdvanceDecrypt', {
    CiphertextBlob: generated.CiphertextBlob,
    Aad: aad,
  });
  expect((opened.Plaintext as Buffer).equals(generated.Plaintext as Buffer)).toBe(true);
  // The endpoint certificate is issued by the persisted CA at every start.
  expect(new X509Certificate(again.ca).ca).toBe(true);
  await second.stop();
}, 60_000);

import {
  openApiClient,
  provision,
  type ClientKeyFile,
  type OpenApi,
} from './instance-provisioning';
import { prepareSdk, runSdk, type Results, type Sdk } from './instance-sdks';

/**
 * The case list, run with one official instance SDK against a server
 * (kms serve or the operator): provisioning through the OpenAPI, the Advance
 * and Iv flows, GenerateRandom, rotation, and every refusal.
 */

export interface SuiteTarget {
  openApi: OpenApi;
  /** host:port of the Instance API. */
  instanceEndpoint: string;
  foreign: ClientKeyFile;
  /** A key that already exists (operator mode: a MasterKey's key). */
  keyId?: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function instanceSdkSuite(sdk: Sdk, target: () => SuiteTarget): void {
  describe(`the ${sdk} instance SDK`, () => {
    let command: string[];
    let before: Results;
    let input: Record<string, unknown>;

    beforeAll(async () => {
      command = await prepareSdk(sdk);
      const t = target();
      const p = await provision(t.openApi, t.keyId);
      input = {
        endpoint: t.instanceEndpoint,
        ca: p.ca,
        keyId: p.keyId,
        clients: { ...p.clients, foreign: t.foreign },
      };
      before = await runSdk(command, { ...input, phase: 'before' });
    }, 600_000);

    test('AdvanceGenerateDataKey with Aad returns a 32-byte key under the primary version', () => {
      const r = before.advanceGenerateDataKey;
      expect(r).toMatchObject({ ok: true, keyId: input.keyId, algorithm: 'AES_GCM' });
      expect(r).toMatchObject({ ivBytes: 12, plaintextBytes: 32 });
      expect(r.keyVersionId).toMatch(UUID);
      expect(r.requestId).toMatch(UUID);
    });

    test('AdvanceDecrypt with the same Aad opens it; another Aad is refused', () => {
      expect(before.advanceDecryptSameAad).toMatchObject({
        ok: true,
        matches: true,
        keyId: input.keyId,
        keyVersionId: before.advanceGenerateDataKey.keyVersionId,
      });
      expect(before.advanceDecryptOtherAad).toMatchObject({
        ok: false,
        code: 'InvalidParameter',
        httpCode: 400,
      });
      expect(before.advanceDecryptOtherAad.message).toContain('CiphertextBlob');
    });

    test('AdvanceEncrypt round-trips and reports the key version', () => {
      expect(before.advanceEncrypt).toMatchObject({
        ok: true,
        matches: true,
        keyVersionId: before.advanceGenerateDataKey.keyVersionId,
      });
    });

    test('GenerateDataKey and Encrypt return an Iv that Decrypt takes back', () => {
      expect(before.generateDataKeyDecrypt).toMatchObject({
        ok: true,
        matches: true,
        ivBytes: 12,
        plaintextBytes: 32,
        algorithm: 'AES_GCM',
      });
      expect(before.encryptDecrypt).toMatchObject({ ok: true, matches: true, ivBytes: 12 });
    });

    test('GenerateRandom returns the bytes asked for', () => {
      expect(before.generateRandom).toEqual({ ok: true, bytes: 24 });
    });

    test('a client key of another instance is unknown here', () => {
      expect(before.foreign).toMatchObject({
        ok: false,
        code: 'InvalidAccessKeyId.NotFound',
        httpCode: 401,
      });
    });

    test('an expired client key is refused', () => {
      expect(before.expired).toMatchObject({
        ok: false,
        code: 'InvalidAccessKeyId.Expired',
        httpCode: 401,
      });
    });

    test('a policy that does not cover the key is refused', () => {
      expect(before.narrow).toMatchObject({
        ok: false,
        code: 'Forbidden.NoPermission',
        httpCode: 403,
      });
      expect(before.narrow.message).toContain(`key/${input.keyId as string}`);
    });

    test('a network rule that does not cover the caller is refused', () => {
      expect(before.network).toMatchObject({
        ok: false,
        code: 'Forbidden.SourceIpNotAllowed',
        httpCode: 403,
      });
      expect(before.network.message).toContain('127.0.0.1');
    });

    test('a Date 1 h off is RequestTimeTooSkewed', () => {
      expect(before.skewedDate).toMatchObject({
        ok: false,
        code: 'RequestTimeTooSkewed',
        httpCode: 400,
      });
    });

    test('after rotation the new primary version is reported and the old ciphertext opens', async () => {
      const call = openApiClient(target().openApi);
      const rotated = await call('CreateKeyVersion', { KeyId: input.keyId });
      const newVersion = rotated.KeyVersion.KeyVersionId as string;
      const old = before.advanceGenerateDataKey;
      const after = await runSdk(command, {
        ...input,
        phase: 'after',
        oldBlob: old.blob,
        oldAad: old.aad,
        oldDigest: old.plaintextDigest,
      });
      expect(newVersion).not.toBe(old.keyVersionId);
      expect(after.afterRotation).toEqual({ ok: true, keyVersionId: newVersion });
      expect(after.oldCiphertext).toEqual({
        ok: true,
        matches: true,
        keyVersionId: old.keyVersionId,
      });
    }, 120_000);
  });
}

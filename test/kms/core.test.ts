import { randomBytes } from 'node:crypto';
import { KmsCore } from '../../src/kms';
import { codeOf, messageOf, openCore } from './core-helpers';

const DAY_MS = 86_400_000;

describe('data keys: round trips and key-version rules', () => {
  test('GenerateDataKey plaintext comes back from Decrypt with the same context', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const context = { app: 'orders', tier: 'prod' };
    const generated = core.generateDataKey({ keyId, encryptionContext: context });
    expect(generated.plaintext).toHaveLength(32);
    const copy = Buffer.from(generated.plaintext);
    // Key order of the context does not matter.
    const opened = core.decrypt({
      ciphertextBlob: generated.ciphertextBlob,
      encryptionContext: { tier: 'prod', app: 'orders' },
    });
    expect(opened.plaintext.equals(copy)).toBe(true);
    expect(opened.keyId).toBe(keyId);
    expect(opened.keyVersionId).toBe(generated.keyVersionId);
  });

  test('KeySpec and NumberOfBytes choose the size; NumberOfBytes wins', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    expect(core.generateDataKey({ keyId, keySpec: 'AES_128' }).plaintext).toHaveLength(16);
    expect(core.generateDataKey({ keyId, keySpec: 'AES_256' }).plaintext).toHaveLength(32);
    expect(
      core.generateDataKey({ keyId, keySpec: 'AES_128', numberOfBytes: 7 }).plaintext,
    ).toHaveLength(7);
    expect(core.generateDataKey({ keyId, numberOfBytes: 1024 }).plaintext).toHaveLength(1024);
    expect(core.generateDataKey({ keyId, numberOfBytes: 1 }).plaintext).toHaveLength(1);
  });

  test('Standard flow stays on the initial version, Advance uses the primary, all old blobs open', async () => {
    const { core } = await openCore();
    const meta = await core.createKey({});
    const initial = meta.primaryKeyVersion;
    const before = core.generateDataKeyWithoutPlaintext({ keyId: meta.keyId });
    const advanceBefore = core.advanceGenerateDataKey({ keyId: meta.keyId, numberOfBytes: 32 });
    expect(advanceBefore.keyVersionId).toBe(initial);

    const v2 = await core.createKeyVersion(meta.keyId);
    const v3 = await core.createKeyVersion(meta.keyId);
    expect(core.describeKey(meta.keyId).primaryKeyVersion).toBe(v3.keyVersionId);

    const standardAfter = core.generateDataKey({ keyId: meta.keyId });
    expect(standardAfter.keyVersionId).toBe(initial);
    const encrypted = core.encrypt({ keyId: meta.keyId, plaintext: Buffer.from('hello') });
    expect(encrypted.keyVersionId).toBe(initial);
    const advanceAfter = core.advanceGenerateDataKey({ keyId: meta.keyId, numberOfBytes: 16 });
    expect(advanceAfter.keyVersionId).toBe(v3.keyVersionId);
    expect(advanceAfter.keyVersionId).not.toBe(v2.keyVersionId);

    expect(core.decrypt({ ciphertextBlob: before.ciphertextBlob }).keyVersionId).toBe(initial);
    expect(
      core
        .advanceDecrypt({ ciphertextBlob: advanceBefore.ciphertextBlob })
        .plaintext.equals(advanceBefore.plaintext),
    ).toBe(true);
    const reopened = core.advanceDecrypt({ ciphertextBlob: advanceAfter.ciphertextBlob });
    expect(reopened.keyVersionId).toBe(v3.keyVersionId);
    expect(reopened.plaintext.equals(advanceAfter.plaintext)).toBe(true);
  });

  test('the blob names its version: the seed layout of 36 ASCII characters first', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const generated = core.generateDataKeyWithoutPlaintext({ keyId });
    const blob = generated.ciphertextBlob;
    expect(blob.toString('latin1', 0, 36)).toBe(generated.keyVersionId);
    expect(blob[36]).toBe(0x01);
    // header + IV + 32-byte wrapped key + tag
    expect(blob).toHaveLength(37 + 12 + 32 + 16);
    const advance = core.advanceGenerateDataKey({ keyId, numberOfBytes: 32 });
    expect(advance.ciphertextBlob[36]).toBe(0x02);
    expect(advance.ciphertextBlob.subarray(37, 49).equals(advance.iv)).toBe(true);
    expect(KmsCore.ivOfBlob(advance.ciphertextBlob)?.equals(advance.iv)).toBe(true);
  });

  test('AES-128 master keys seal and open', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({ keySpec: 'Aliyun_AES_128' });
    const sealed = core.encrypt({ keyId, plaintext: Buffer.from('x'.repeat(6144)) });
    expect(core.decrypt({ ciphertextBlob: sealed.ciphertextBlob }).plaintext.toString()).toBe(
      'x'.repeat(6144),
    );
  });

  test('aliases and ARNs resolve to the real key id', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    await core.createAlias('alias/payments', keyId);
    expect(core.generateDataKey({ keyId: 'alias/payments' }).keyId).toBe(keyId);
    expect(core.describeKey(`acs:kms:cn-hangzhou:123:key/${keyId}`).keyId).toBe(keyId);
    expect(core.describeKey('acs:kms:cn-hangzhou:123:alias/payments').keyId).toBe(keyId);
  });
});

describe('binding and tamper detection', () => {
  test('a wrong, missing or extra EncryptionContext refuses to decrypt', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const { ciphertextBlob } = core.generateDataKey({
      keyId,
      encryptionContext: { ns: 'a', name: 'b' },
    });
    const wrongContexts: (Record<string, string> | undefined)[] = [
      undefined,
      { ns: 'a' },
      { ns: 'a', name: 'c' },
      { ns: 'a', name: 'b', x: '' },
    ];
    for (const encryptionContext of wrongContexts) {
      expect(await codeOf(() => core.decrypt({ ciphertextBlob, encryptionContext }))).toBe(
        'InvalidParameter',
      );
    }
    const plain = core.generateDataKey({ keyId });
    expect(
      await codeOf(() =>
        core.decrypt({ ciphertextBlob: plain.ciphertextBlob, encryptionContext: { a: 'b' } }),
      ),
    ).toBe('InvalidParameter');
  });

  test('Aad binds Advance blobs', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const aad = Buffer.from('default/orders');
    const generated = core.advanceGenerateDataKey({ keyId, numberOfBytes: 32, aad });
    expect(
      core
        .advanceDecrypt({ ciphertextBlob: generated.ciphertextBlob, aad })
        .plaintext.equals(generated.plaintext),
    ).toBe(true);
    for (const wrong of [undefined, Buffer.from('default/other')]) {
      expect(
        await codeOf(() =>
          core.advanceDecrypt({ ciphertextBlob: generated.ciphertextBlob, aad: wrong }),
        ),
      ).toBe('InvalidParameter');
    }
  });

  test('every single flipped byte of a blob is detected', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const { ciphertextBlob } = core.generateDataKeyWithoutPlaintext({ keyId });
    for (let i = 0; i < ciphertextBlob.length; i++) {
      const tampered = Buffer.from(ciphertextBlob);
      tampered[i] ^= 0x01;
      const code = await codeOf(() => core.decrypt({ ciphertextBlob: tampered }));
      // A changed version id may name no version at all; everything else is InvalidParameter.
      expect(['InvalidParameter', 'Forbidden.KeyNotFound']).toContain(code);
    }
    expect(
      await codeOf(() => core.decrypt({ ciphertextBlob: ciphertextBlob.subarray(0, 60) })),
    ).toBe('InvalidParameter');
    expect(await codeOf(() => core.decrypt({ ciphertextBlob: randomBytes(97) }))).toBe(
      'InvalidParameter',
    );
  });

  test('a blob cannot be moved to another version or key', async () => {
    const { core } = await openCore();
    const a = await core.createKey({});
    const b = await core.createKey({});
    const { ciphertextBlob } = core.generateDataKeyWithoutPlaintext({ keyId: a.keyId });
    const moved = Buffer.from(ciphertextBlob);
    moved.write(b.primaryKeyVersion, 0, 36, 'latin1');
    expect(await codeOf(() => core.decrypt({ ciphertextBlob: moved }))).toBe('InvalidParameter');
  });

  test('Decrypt refuses Advance blobs; AdvanceDecrypt opens Standard blobs with the canonical context as Aad', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const advance = core.advanceGenerateDataKey({ keyId, numberOfBytes: 32 });
    expect(await messageOf(() => core.decrypt({ ciphertextBlob: advance.ciphertextBlob }))).toMatch(
      /AdvanceDecrypt/,
    );
    const standard = core.generateDataKey({ keyId, encryptionContext: { b: '2', a: '1' } });
    const opened = core.advanceDecrypt({
      ciphertextBlob: standard.ciphertextBlob,
      aad: Buffer.from('{"a":"1","b":"2"}'),
    });
    expect(opened.plaintext.equals(standard.plaintext)).toBe(true);
  });

  test('ReEncrypt moves a Standard blob to the destination primary without changing the data key', async () => {
    const { core } = await openCore();
    const source = await core.createKey({});
    const destination = await core.createKey({});
    const v2 = await core.createKeyVersion(destination.keyId);
    const generated = core.generateDataKey({ keyId: source.keyId, encryptionContext: { a: '1' } });
    const moved = core.reEncrypt({
      ciphertextBlob: generated.ciphertextBlob,
      sourceEncryptionContext: { a: '1' },
      destinationKeyId: destination.keyId,
      destinationEncryptionContext: { b: '2' },
    });
    expect(moved.keyVersionId).toBe(v2.keyVersionId);
    expect(moved.sourceKeyId).toBe(source.keyId);
    const opened = core.decrypt({
      ciphertextBlob: moved.ciphertextBlob,
      encryptionContext: { b: '2' },
    });
    expect(opened.plaintext.equals(generated.plaintext)).toBe(true);
  });

  test('rewrapToPrimary re-wraps either flow under the primary version, same data key', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const standard = core.generateDataKey({ keyId, encryptionContext: { dk: 'ns/a' } });
    const v2 = await core.createKeyVersion(keyId);
    const aad = Buffer.from('ns/a');
    const rewrapped = core.rewrapToPrimary({
      ciphertextBlob: standard.ciphertextBlob,
      sourceAad: Buffer.from('{"dk":"ns/a"}'),
      destinationAad: aad,
    });
    expect(rewrapped.keyVersionId).toBe(v2.keyVersionId);
    const opened = core.advanceDecrypt({ ciphertextBlob: rewrapped.ciphertextBlob, aad });
    expect(opened.plaintext.equals(standard.plaintext)).toBe(true);
    const v3 = await core.createKeyVersion(keyId);
    const again = core.rewrapToPrimary({
      ciphertextBlob: rewrapped.ciphertextBlob,
      sourceAad: aad,
      destinationAad: aad,
    });
    expect(again.keyVersionId).toBe(v3.keyVersionId);
    expect(
      core
        .advanceDecrypt({ ciphertextBlob: again.ciphertextBlob, aad })
        .plaintext.equals(standard.plaintext),
    ).toBe(true);
  });
});

describe('validation bounds and error codes', () => {
  test('data-key parameters', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    expect(await codeOf(() => core.generateDataKey({ keyId, numberOfBytes: 0 }))).toBe(
      'InvalidParameter',
    );
    expect(await codeOf(() => core.generateDataKey({ keyId, numberOfBytes: 1025 }))).toBe(
      'InvalidParameter',
    );
    expect(await messageOf(() => core.generateDataKey({ keyId, keySpec: 'AES_512' }))).toMatch(
      /KeySpec/,
    );
    expect(
      await messageOf(() => core.advanceGenerateDataKey({ keyId, numberOfBytes: 2000 })),
    ).toMatch(/NumberOfBytes/);
    expect(
      await messageOf(() =>
        core.advanceGenerateDataKey({ keyId, numberOfBytes: 32, aad: Buffer.alloc(8193) }),
      ),
    ).toMatch(/Aad/);
    expect(await messageOf(() => core.encrypt({ keyId, plaintext: Buffer.alloc(6145) }))).toMatch(
      /Plaintext/,
    );
    expect(await messageOf(() => core.encrypt({ keyId, plaintext: Buffer.alloc(0) }))).toMatch(
      /Plaintext/,
    );
  });

  test('unknown keys, aliases and versions', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    expect(await codeOf(() => core.generateDataKey({ keyId: 'no-such-key' }))).toBe(
      'Forbidden.KeyNotFound',
    );
    expect(await codeOf(() => core.generateDataKey({ keyId: 'alias/none' }))).toBe(
      'Forbidden.AliasNotFound',
    );
    expect(await codeOf(() => core.describeKeyVersion(keyId, 'nope'))).toBe(
      'Forbidden.KeyVersionNotFound',
    );
    expect(await codeOf(() => core.describeKey(''))).toBe('InvalidParameter');
    expect(await codeOf(() => core.describeKey('k'.repeat(600)))).toBe('InvalidParameter');
  });

  test('CreateKey parameters', async () => {
    const { core } = await openCore();
    expect(await messageOf(() => core.createKey({ keySpec: 'Aliyun_AES_512' }))).toMatch(/KeySpec/);
    expect(await messageOf(() => core.createKey({ keyUsage: 'SIGN/VERIFY' }))).toMatch(/KeyUsage/);
    expect(await messageOf(() => core.createKey({ description: 'd'.repeat(8193) }))).toMatch(
      /Description/,
    );
    for (const interval of ['6d', '366d', '30', 'd', '30w', '-7d', '604799s']) {
      expect(await messageOf(() => core.createKey({ rotationInterval: interval }))).toMatch(
        /RotationInterval/,
      );
    }
    const ok = await core.createKey({ enableAutomaticRotation: true, rotationInterval: '604800s' });
    expect(ok.rotationInterval).toBe('604800s');
    expect((await core.createKey({ rotationInterval: '365d' })).rotationInterval).toBe('31536000s');
  });

  test('asymmetric keys exist but refuse symmetric-only operations', async () => {
    const { core } = await openCore();
    const rsa = await core.createKey({ keySpec: 'RSA_2048', keyUsage: 'SIGN/VERIFY' });
    expect(rsa.keySpec).toBe('RSA_2048');
    expect(
      await codeOf(() => core.advanceGenerateDataKey({ keyId: rsa.keyId, numberOfBytes: 32 })),
    ).toBe('Forbidden.OnlySymmetricKeySupported');
    expect(await codeOf(() => core.generateDataKey({ keyId: rsa.keyId }))).toBe(
      'Forbidden.OnlySymmetricKeySupported',
    );
    expect(await codeOf(() => core.createKeyVersion(rsa.keyId))).toBe(
      'Forbidden.OnlySymmetricKeySupported',
    );
  });

  test('DryRun validates everything and answers DryRunOperation without generating', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    expect(await codeOf(() => core.generateDataKeyWithoutPlaintext({ keyId, dryRun: true }))).toBe(
      'DryRunOperation',
    );
    expect(
      await codeOf(() => core.generateDataKeyWithoutPlaintext({ keyId: 'missing', dryRun: true })),
    ).toBe('Forbidden.KeyNotFound');
    expect(
      await codeOf(() =>
        core.generateDataKeyWithoutPlaintext({ keyId, numberOfBytes: 0, dryRun: true }),
      ),
    ).toBe('InvalidParameter');
    const blob = core.generateDataKeyWithoutPlaintext({ keyId }).ciphertextBlob;
    expect(await codeOf(() => core.decrypt({ ciphertextBlob: blob, dryRun: true }))).toBe(
      'DryRunOperation',
    );
  });

  test('a dry run of Decrypt, AdvanceDecrypt and ReEncrypt checks the blob, context and Aad', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const context = { app: 'orders' };
    const standard = core.generateDataKeyWithoutPlaintext({ keyId, encryptionContext: context });
    const advance = core.advanceGenerateDataKeyWithoutPlaintext({
      keyId,
      numberOfBytes: 32,
      aad: Buffer.from('aad'),
    });
    const tampered = Buffer.from(standard.ciphertextBlob);
    tampered[tampered.length - 1] ^= 1;
    const dry = { dryRun: true };
    const cases: [string, () => unknown, string][] = [
      [
        'decrypt ok',
        () =>
          core.decrypt({
            ciphertextBlob: standard.ciphertextBlob,
            encryptionContext: context,
            ...dry,
          }),
        'DryRunOperation',
      ],
      [
        'decrypt wrong context',
        () =>
          core.decrypt({
            ciphertextBlob: standard.ciphertextBlob,
            encryptionContext: { app: 'x' },
            ...dry,
          }),
        'InvalidParameter',
      ],
      [
        'decrypt tampered',
        () => core.decrypt({ ciphertextBlob: tampered, encryptionContext: context, ...dry }),
        'InvalidParameter',
      ],
      [
        'advance ok',
        () =>
          core.advanceDecrypt({
            ciphertextBlob: advance.ciphertextBlob,
            aad: Buffer.from('aad'),
            ...dry,
          }),
        'DryRunOperation',
      ],
      [
        'advance wrong aad',
        () =>
          core.advanceDecrypt({
            ciphertextBlob: advance.ciphertextBlob,
            aad: Buffer.from('bad'),
            ...dry,
          }),
        'InvalidParameter',
      ],
      [
        'reEncrypt ok',
        () =>
          core.reEncrypt({
            ciphertextBlob: standard.ciphertextBlob,
            sourceEncryptionContext: context,
            destinationKeyId: keyId,
            ...dry,
          }),
        'DryRunOperation',
      ],
      [
        'reEncrypt wrong context',
        () =>
          core.reEncrypt({
            ciphertextBlob: standard.ciphertextBlob,
            destinationKeyId: keyId,
            ...dry,
          }),
        'InvalidParameter',
      ],
    ];
    const codes = await Promise.all(cases.map(async ([name, fn]) => [name, await codeOf(fn)]));
    expect(codes).toEqual(cases.map(([name, , code]) => [name, code]));
  });

  test.each(['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf'])(
    'KeySpec=%s is InvalidParameter on CreateKey and GenerateDataKey, not a crash',
    async (name) => {
      const { core } = await openCore();
      expect(await messageOf(() => core.createKey({ keySpec: name }))).toContain('KeySpec');
      const { keyId } = await core.createKey({});
      expect(await codeOf(() => core.generateDataKey({ keyId, keySpec: name }))).toBe(
        'InvalidParameter',
      );
      expect(await codeOf(() => core.createKey({ keySpec: name }))).toBe('InvalidParameter');
    },
  );

  test('RSA_2048 key generation leaves the event loop free', async () => {
    const { core } = await openCore();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      await Promise.all([1, 2, 3].map(() => core.createKey({ keySpec: 'RSA_2048' })));
    } finally {
      clearInterval(timer);
    }
    // The timer kept firing while the keys were generated on the thread pool
    // (synchronous generation let it fire at most once, after the fact).
    expect(ticks).toBeGreaterThan(1);
  });

  test('alias rules', async () => {
    const { core } = await openCore();
    const a = await core.createKey({});
    const b = await core.createKey({});
    for (const bad of [
      'payments',
      'alias/',
      'alias/acs',
      'alias/acs/x',
      `alias/${'x'.repeat(256)}`,
      'alias/a b',
      'alias/ü',
    ]) {
      expect(await messageOf(() => core.createAlias(bad, a.keyId))).toMatch(/AliasName/);
    }
    await core.createAlias('alias/app/one', a.keyId);
    await core.createAlias('alias/app_two-2', a.keyId);
    expect(await codeOf(() => core.createAlias('alias/app/one', b.keyId))).toBe(
      'Forbidden.AliasExists',
    );
    expect(core.listAliasesByKeyId(a.keyId, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(2);
    await core.updateAlias('alias/app/one', b.keyId);
    expect(core.describeKey('alias/app/one').keyId).toBe(b.keyId);
    await core.deleteAlias('alias/app/one');
    expect(await codeOf(() => core.deleteAlias('alias/app/one'))).toBe('Forbidden.AliasNotFound');
    expect(await codeOf(() => core.updateAlias('alias/nope', a.keyId))).toBe(
      'Forbidden.AliasNotFound',
    );
    expect(core.listAliases({ pageNumber: 1, pageSize: 1 })).toMatchObject({ totalCount: 1 });
  });

  test('paging', async () => {
    const { core } = await openCore();
    for (let i = 0; i < 12; i++) await core.createKey({});
    const first = core.listKeys({ pageNumber: 1, pageSize: 10 });
    const second = core.listKeys({ pageNumber: 2, pageSize: 10 });
    expect(first.totalCount).toBe(12);
    expect(first.keys).toHaveLength(10);
    expect(second.keys).toHaveLength(2);
    expect(new Set([...first.keys, ...second.keys]).size).toBe(12);
    expect(await messageOf(() => core.listKeys({ pageNumber: 1, pageSize: 101 }))).toMatch(
      /PageSize/,
    );
    expect(await messageOf(() => core.listKeys({ pageNumber: 0, pageSize: 10 }))).toMatch(
      /PageNumber/,
    );
  });
});

describe('key states', () => {
  test('a disabled key refuses every cryptographic call, decryption included', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const blob = core.generateDataKeyWithoutPlaintext({ keyId }).ciphertextBlob;
    await core.disableKey(keyId);
    expect(core.describeKey(keyId).keyState).toBe('Disabled');
    expect(await codeOf(() => core.generateDataKey({ keyId }))).toBe('Rejected.Disabled');
    expect(await codeOf(() => core.decrypt({ ciphertextBlob: blob }))).toBe('Rejected.Disabled');
    expect(await codeOf(() => core.advanceDecrypt({ ciphertextBlob: blob }))).toBe(
      'Rejected.Disabled',
    );
    expect(await codeOf(() => core.createKeyVersion(keyId))).toBe('Rejected.Disabled');
    await core.enableKey(keyId);
    expect(core.decrypt({ ciphertextBlob: blob }).keyId).toBe(keyId);
  });

  test('pending deletion: refused, cancellable, then deleted with its aliases when the window ends', async () => {
    const { core, clock } = await openCore();
    const { keyId } = await core.createKey({});
    await core.createAlias('alias/doomed', keyId);
    const blob = core.generateDataKeyWithoutPlaintext({ keyId }).ciphertextBlob;
    expect(await codeOf(() => core.scheduleKeyDeletion(keyId, 6))).toBe('InvalidParameter');
    expect(await codeOf(() => core.scheduleKeyDeletion(keyId, 367))).toBe('InvalidParameter');
    await core.scheduleKeyDeletion(keyId, 7);
    const meta = core.describeKey(keyId);
    expect(meta.keyState).toBe('PendingDeletion');
    expect(meta.deleteDate).toBe('2026-03-08T00:00:00Z');
    expect(await codeOf(() => core.decrypt({ ciphertextBlob: blob }))).toBe(
      'Rejected.PendingDeletion',
    );
    expect(await codeOf(() => core.enableKey(keyId))).toBe('Rejected.PendingDeletion');
    await core.cancelKeyDeletion(keyId);
    expect(core.describeKey(keyId).keyState).toBe('Enabled');
    expect(await codeOf(() => core.cancelKeyDeletion(keyId))).toBe('Rejected.UnexpectedKeyState');

    await core.scheduleKeyDeletion(keyId, 7);
    clock.advance(6 * DAY_MS);
    expect((await core.runMaintenance()).deleted).toEqual([]);
    clock.advance(DAY_MS);
    expect((await core.runMaintenance()).deleted).toEqual([keyId]);
    expect(await codeOf(() => core.describeKey(keyId))).toBe('Forbidden.KeyNotFound');
    expect(await codeOf(() => core.describeKey('alias/doomed'))).toBe('Forbidden.AliasNotFound');
    expect(await codeOf(() => core.decrypt({ ciphertextBlob: blob }))).toBe(
      'Forbidden.KeyNotFound',
    );
  });
});

describe('automatic rotation on an injected clock', () => {
  test('rotates once per interval, reports the dates, and is suspended while disabled', async () => {
    const { core, clock } = await openCore();
    const meta = await core.createKey({ enableAutomaticRotation: true, rotationInterval: '7d' });
    expect(meta.automaticRotation).toBe('Enabled');
    expect(meta.nextRotationDate).toBe('2026-03-08T00:00:00Z');

    clock.advance(7 * DAY_MS - 1000);
    expect((await core.runMaintenance()).rotated).toEqual([]);
    clock.advance(1000);
    expect((await core.runMaintenance()).rotated).toEqual([meta.keyId]);
    expect((await core.runMaintenance()).rotated).toEqual([]);
    const rotated = core.describeKey(meta.keyId);
    expect(rotated.primaryKeyVersion).not.toBe(meta.primaryKeyVersion);
    expect(rotated.lastRotationDate).toBe('2026-03-08T00:00:00Z');
    expect(rotated.nextRotationDate).toBe('2026-03-15T00:00:00Z');

    // A long pause rotates once, not once per missed interval.
    clock.advance(30 * DAY_MS);
    await core.runMaintenance();
    expect(core.listKeyVersions(meta.keyId, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(3);

    await core.disableKey(meta.keyId);
    expect(core.describeKey(meta.keyId).automaticRotation).toBe('Suspended');
    clock.advance(30 * DAY_MS);
    expect((await core.runMaintenance()).rotated).toEqual([]);
  });

  test('UpdateRotationPolicy turns rotation on and off; a past due date rotates at once', async () => {
    const { core, clock } = await openCore();
    const { keyId } = await core.createKey({});
    clock.advance(40 * DAY_MS);
    await core.updateRotationPolicy(keyId, true, '30d');
    expect((await core.runMaintenance()).rotated).toEqual([keyId]);
    await core.updateRotationPolicy(keyId, false);
    expect(core.describeKey(keyId).automaticRotation).toBe('Disabled');
    clock.advance(60 * DAY_MS);
    expect((await core.runMaintenance()).rotated).toEqual([]);
  });

  test('a shorter minimum interval is only available when the core is opened with it', async () => {
    const { core } = await openCore({ minRotationIntervalSeconds: 1 });
    expect((await core.createKey({ rotationInterval: '10s' })).rotationInterval).toBe('10s');
  });
});

describe('operator extensions', () => {
  test('createKey with a chosen key id is idempotent and refuses a malformed id', async () => {
    const { core } = await openCore();
    const keyId = '5b0f6a52-3c1e-4f4e-9a55-0e2f1d6c7a11';
    const first = await core.createKey({ keyId, description: 'mk' });
    const again = await core.createKey({ keyId, description: 'ignored on retry' });
    expect(first.keyId).toBe(keyId);
    expect(again).toEqual(first);
    expect(core.listKeys({ pageNumber: 1, pageSize: 10 }).totalCount).toBe(1);
    expect(await messageOf(() => core.createKey({ keyId: 'not-a-uuid' }))).toMatch(/KeyId/);
  });
});

describe('idempotent rotation (operator extensions)', () => {
  test('a rotation token rotates exactly once, however often it is retried', async () => {
    const { core } = await openCore();
    const { keyId } = await core.createKey({});
    const first = await core.createKeyVersion(keyId, 'mk-uid:1');
    const retry = await core.createKeyVersion(keyId, 'mk-uid:1');
    expect(retry.keyVersionId).toBe(first.keyVersionId);
    const second = await core.createKeyVersion(keyId, 'mk-uid:2');
    expect(second.keyVersionId).not.toBe(first.keyVersionId);
    // An old token seen again (a value set back) does not rotate either.
    expect((await core.createKeyVersion(keyId, 'mk-uid:1')).keyVersionId).toBe(first.keyVersionId);
    expect(core.listKeyVersions(keyId, { pageNumber: 1, pageSize: 10 }).totalCount).toBe(3);
  });

  test('rotateIfDue rotates one key only when its date has passed', async () => {
    const { core, clock } = await openCore();
    const { keyId } = await core.createKey({
      enableAutomaticRotation: true,
      rotationInterval: '7d',
    });
    expect(await core.rotateIfDue(keyId)).toBe(false);
    clock.advance(7 * DAY_MS);
    expect(await core.rotateIfDue(keyId)).toBe(true);
    expect(await core.rotateIfDue(keyId)).toBe(false);
  });
});

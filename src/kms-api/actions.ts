import { blobLength } from '../kms/blob';
import type { KmsCore, KeyMetadata, KeyVersionInfo, Sealed, SealedAdvance } from '../kms/core';
import type { StoredAlias } from '../kms/model';
import { MAX_AAD_BYTES, MAX_DATA_KEY_BYTES, MAX_PLAINTEXT_BYTES } from '../kms/validate';
import { INSTANCE_ACTION_HANDLERS, listKmsInstances } from './instance-actions';
import { page, pageFields, type Params } from './params';

/** What an action sees besides its parameters. */
export interface ActionContext {
  core: KmsCore;
  regionId: string;
  accountId: string;
}

export interface ActionResult {
  body: Record<string, unknown>;
  /** The real key id the call touched, for the access log. */
  keyId?: string;
}

type Action = (params: Params, ctx: ActionContext) => ActionResult | Promise<ActionResult>;

/** Largest blob: header, IV and tag around the largest plaintext (6 KB). */
const MAX_BLOB_BYTES = blobLength(MAX_PLAINTEXT_BYTES);

const keyArn = (ctx: ActionContext, keyId: string) =>
  `acs:kms:${ctx.regionId}:${ctx.accountId}:key/${keyId}`;
const aliasArn = (ctx: ActionContext, aliasName: string) =>
  `acs:kms:${ctx.regionId}:${ctx.accountId}:${aliasName}`;

function keyMetadata(ctx: ActionContext, m: KeyMetadata) {
  return {
    KeyId: m.keyId,
    Arn: keyArn(ctx, m.keyId),
    Description: m.description,
    KeySpec: m.keySpec,
    KeyUsage: m.keyUsage,
    KeyState: m.keyState,
    Origin: m.origin,
    ProtectionLevel: m.protectionLevel,
    Creator: ctx.accountId,
    CreationDate: m.creationDate,
    DeleteDate: m.deleteDate,
    PrimaryKeyVersion: m.primaryKeyVersion,
    LastRotationDate: m.lastRotationDate,
    NextRotationDate: m.nextRotationDate,
    AutomaticRotation: m.automaticRotation,
    RotationInterval: m.rotationInterval,
    DKMSInstanceId: m.dkmsInstanceId,
  };
}

const keyVersion = (v: KeyVersionInfo) => ({
  KeyId: v.keyId,
  KeyVersionId: v.keyVersionId,
  CreationDate: v.creationDate,
});

const alias = (ctx: ActionContext, a: StoredAlias) => ({
  AliasName: a.aliasName,
  AliasArn: aliasArn(ctx, a.aliasName),
  KeyId: a.keyId,
});

const b64 = (buffer: Buffer) => buffer.toString('base64');

/** The response fields every sealing operation shares. */
const sealedFields = (r: Sealed) => ({
  KeyId: r.keyId,
  KeyVersionId: r.keyVersionId,
  CiphertextBlob: b64(r.ciphertextBlob),
});

const advanceFields = (r: SealedAdvance) => ({
  ...sealedFields(r),
  Algorithm: r.algorithm,
  Iv: b64(r.iv),
});

/** Encodes then zeroes a plaintext buffer: the JS string is the only copy left. */
function takePlaintext(buffer: Buffer): string {
  try {
    return buffer.toString('base64');
  } finally {
    buffer.fill(0);
  }
}

async function metadataResult(ctx: ActionContext, m: Promise<KeyMetadata> | KeyMetadata) {
  const meta = await m;
  return { body: { KeyMetadata: keyMetadata(ctx, meta) }, keyId: meta.keyId };
}

async function emptyResult(m: Promise<KeyMetadata>): Promise<ActionResult> {
  return { body: {}, keyId: (await m).keyId };
}

function dataKeyInput(params: Params) {
  return {
    keyId: params.required('KeyId'),
    keySpec: params.optional('KeySpec') || undefined,
    numberOfBytes: params.integer('NumberOfBytes', 1, MAX_DATA_KEY_BYTES),
    encryptionContext: params.encryptionContext('EncryptionContext'),
    dryRun: params.boolean('DryRun'),
  };
}

function advanceDataKeyInput(params: Params) {
  return {
    keyId: params.required('KeyId'),
    numberOfBytes: params.requiredInteger('NumberOfBytes', 1, MAX_DATA_KEY_BYTES),
    aad: params.base64('Aad', MAX_AAD_BYTES),
    dryRun: params.boolean('DryRun'),
  };
}

export const ACTIONS: Record<string, Action> = {
  CreateKey: (p, ctx) =>
    metadataResult(
      ctx,
      ctx.core.createKey({
        description: p.optional('Description'),
        keySpec: p.optional('KeySpec') || undefined,
        keyUsage: p.optional('KeyUsage') || undefined,
        enableAutomaticRotation: p.boolean('EnableAutomaticRotation'),
        rotationInterval: p.optional('RotationInterval') || undefined,
        dkmsInstanceId: p.optional('DKMSInstanceId') || undefined,
      }),
    ),
  DescribeKey: (p, ctx) => metadataResult(ctx, ctx.core.describeKey(p.required('KeyId'))),
  ListKeys: (p, ctx) => {
    const pg = page(p);
    const { keys, totalCount } = ctx.core.listKeys(pg);
    return {
      body: {
        Keys: { Key: keys.map((id) => ({ KeyId: id, KeyArn: keyArn(ctx, id) })) },
        ...pageFields(pg, totalCount),
      },
    };
  },
  EnableKey: (p, ctx) => emptyResult(ctx.core.enableKey(p.required('KeyId'))),
  DisableKey: (p, ctx) => emptyResult(ctx.core.disableKey(p.required('KeyId'))),
  ScheduleKeyDeletion: (p, ctx) =>
    emptyResult(
      ctx.core.scheduleKeyDeletion(
        p.required('KeyId'),
        p.requiredInteger('PendingWindowInDays', 7, 366),
      ),
    ),
  CancelKeyDeletion: (p, ctx) => emptyResult(ctx.core.cancelKeyDeletion(p.required('KeyId'))),
  CreateKeyVersion: async (p, ctx) => {
    const version = await ctx.core.createKeyVersion(p.required('KeyId'));
    return { body: { KeyVersion: keyVersion(version) }, keyId: version.keyId };
  },
  ListKeyVersions: (p, ctx) => {
    const pg = page(p);
    const { versions, totalCount } = ctx.core.listKeyVersions(p.required('KeyId'), pg);
    return {
      body: {
        KeyVersions: { KeyVersion: versions.map(keyVersion) },
        ...pageFields(pg, totalCount),
      },
      keyId: versions[0]?.keyId,
    };
  },
  DescribeKeyVersion: (p, ctx) => {
    const version = ctx.core.describeKeyVersion(p.required('KeyId'), p.required('KeyVersionId'));
    return { body: { KeyVersion: keyVersion(version) }, keyId: version.keyId };
  },
  UpdateRotationPolicy: (p, ctx) => {
    const enable = p.boolean('EnableAutomaticRotation');
    if (enable === undefined) p.required('EnableAutomaticRotation');
    return emptyResult(
      ctx.core.updateRotationPolicy(
        p.required('KeyId'),
        enable as boolean,
        p.optional('RotationInterval') || undefined,
      ),
    );
  },
  CreateAlias: async (p, ctx) => {
    await ctx.core.createAlias(p.required('AliasName'), p.required('KeyId'));
    return { body: {} };
  },
  UpdateAlias: async (p, ctx) => {
    await ctx.core.updateAlias(p.required('AliasName'), p.required('KeyId'));
    return { body: {} };
  },
  DeleteAlias: async (p, ctx) => {
    await ctx.core.deleteAlias(p.required('AliasName'));
    return { body: {} };
  },
  ListAliases: (p, ctx) => {
    const pg = page(p);
    const { aliases, totalCount } = ctx.core.listAliases(pg);
    return {
      body: {
        Aliases: { Alias: aliases.map((a) => alias(ctx, a)) },
        ...pageFields(pg, totalCount),
      },
    };
  },
  ListAliasesByKeyId: (p, ctx) => {
    const pg = page(p);
    const { aliases, totalCount } = ctx.core.listAliasesByKeyId(p.required('KeyId'), pg);
    return {
      body: {
        Aliases: { Alias: aliases.map((a) => alias(ctx, a)) },
        ...pageFields(pg, totalCount),
      },
    };
  },

  GenerateDataKey: (p, ctx) => {
    const r = ctx.core.generateDataKey(dataKeyInput(p));
    return {
      body: { ...sealedFields(r), Plaintext: takePlaintext(r.plaintext) },
      keyId: r.keyId,
    };
  },
  GenerateDataKeyWithoutPlaintext: (p, ctx) => {
    const r = ctx.core.generateDataKeyWithoutPlaintext(dataKeyInput(p));
    return {
      body: sealedFields(r),
      keyId: r.keyId,
    };
  },
  AdvanceGenerateDataKey: (p, ctx) => {
    const r = ctx.core.advanceGenerateDataKey(advanceDataKeyInput(p));
    return {
      body: { ...advanceFields(r), Plaintext: takePlaintext(r.plaintext) },
      keyId: r.keyId,
    };
  },
  AdvanceGenerateDataKeyWithoutPlaintext: (p, ctx) => {
    const r = ctx.core.advanceGenerateDataKeyWithoutPlaintext(advanceDataKeyInput(p));
    return {
      body: advanceFields(r),
      keyId: r.keyId,
    };
  },
  Encrypt: (p, ctx) => {
    const plaintext = p.requiredBase64('Plaintext', MAX_PLAINTEXT_BYTES);
    try {
      const r = ctx.core.encrypt({
        keyId: p.required('KeyId'),
        plaintext,
        encryptionContext: p.encryptionContext('EncryptionContext'),
        dryRun: p.boolean('DryRun'),
      });
      return {
        body: sealedFields(r),
        keyId: r.keyId,
      };
    } finally {
      plaintext.fill(0);
    }
  },
  AdvanceEncrypt: (p, ctx) => {
    const plaintext = p.requiredBase64('Plaintext', MAX_PLAINTEXT_BYTES);
    try {
      const r = ctx.core.advanceEncrypt({
        keyId: p.required('KeyId'),
        plaintext,
        aad: p.base64('Aad', MAX_AAD_BYTES),
        dryRun: p.boolean('DryRun'),
      });
      return {
        body: advanceFields(r),
        keyId: r.keyId,
      };
    } finally {
      plaintext.fill(0);
    }
  },
  Decrypt: (p, ctx) => {
    const r = ctx.core.decrypt({
      ciphertextBlob: p.requiredBase64('CiphertextBlob', MAX_BLOB_BYTES),
      encryptionContext: p.encryptionContext('EncryptionContext'),
      dryRun: p.boolean('DryRun'),
    });
    return {
      body: { KeyId: r.keyId, KeyVersionId: r.keyVersionId, Plaintext: takePlaintext(r.plaintext) },
      keyId: r.keyId,
    };
  },
  AdvanceDecrypt: (p, ctx) => {
    const r = ctx.core.advanceDecrypt({
      ciphertextBlob: p.requiredBase64('CiphertextBlob', MAX_BLOB_BYTES),
      aad: p.base64('Aad', MAX_AAD_BYTES),
      dryRun: p.boolean('DryRun'),
    });
    return {
      body: {
        KeyId: r.keyId,
        KeyVersionId: r.keyVersionId,
        Plaintext: takePlaintext(r.plaintext),
        Algorithm: r.algorithm,
      },
      keyId: r.keyId,
    };
  },
  ReEncrypt: (p, ctx) => {
    const r = ctx.core.reEncrypt({
      ciphertextBlob: p.requiredBase64('CiphertextBlob', MAX_BLOB_BYTES),
      sourceEncryptionContext: p.encryptionContext('SourceEncryptionContext'),
      destinationKeyId: p.required('DestinationKeyId'),
      destinationEncryptionContext: p.encryptionContext('DestinationEncryptionContext'),
      dryRun: p.boolean('DryRun'),
    });
    return {
      body: {
        ...sealedFields(r),
        SourceKeyId: r.sourceKeyId,
        SourceKeyVersionId: r.sourceKeyVersionId,
      },
      keyId: r.keyId,
    };
  },
  ...INSTANCE_ACTION_HANDLERS,
  ListKmsInstances: listKmsInstances,
};

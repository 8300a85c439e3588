/** Persisted shapes of the key store. Key material appears only wrapped by the root key. */

export const SYMMETRIC_KEY_SPECS = {
  Aliyun_AES_256: 32,
  Aliyun_AES_192: 24,
  Aliyun_AES_128: 16,
} as const;
/** Bytes of a data key by the KeySpec of GenerateDataKey (NumberOfBytes wins over it). */
export const DATA_KEY_SPEC_BYTES = { AES_256: 32, AES_128: 16 } as const;
export type DataKeySpec = keyof typeof DATA_KEY_SPEC_BYTES;

export const ASYMMETRIC_KEY_SPECS = ['RSA_2048', 'EC_P256'] as const;

export type SymmetricKeySpec = keyof typeof SYMMETRIC_KEY_SPECS;
export type AsymmetricKeySpec = (typeof ASYMMETRIC_KEY_SPECS)[number];
export type MasterKeySpec = SymmetricKeySpec | AsymmetricKeySpec;
export type KeyUsage = 'ENCRYPT/DECRYPT' | 'SIGN/VERIFY';
export type KeyState = 'Enabled' | 'Disabled' | 'PendingDeletion';

export const isSymmetricSpec = (spec: MasterKeySpec): spec is SymmetricKeySpec =>
  Object.hasOwn(SYMMETRIC_KEY_SPECS, spec);

export interface StoredKeyVersion {
  keyVersionId: string;
  creationDate: string;
  /** base64(iv | ciphertext | tag) of the material under the root key. */
  wrappedMaterial: string;
  /** Set by a caller that rotates idempotently: the same token never rotates twice. */
  rotationToken?: string;
}

export interface StoredKey {
  keyId: string;
  description: string;
  keySpec: MasterKeySpec;
  keyUsage: KeyUsage;
  keyState: KeyState;
  creationDate: string;
  deleteDate?: string;
  automaticRotation: boolean;
  rotationIntervalSeconds?: number;
  lastRotationDate?: string;
  /** The KMS instance the key belongs to (`kst-...`), for keys created with DKMSInstanceId. */
  dkmsInstanceId?: string;
  /** versions[0] is the initial version, the last one is the primary version. */
  versions: StoredKeyVersion[];
}

export interface StoredAlias {
  aliasName: string;
  keyId: string;
  creationDate: string;
}

/** TypeScript shapes of the kms.datakey.io/v1alpha1 resources (schemas in crds.ts). */

export const GROUP = 'kms.datakey.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export const ANNOTATION_ROTATE = `${GROUP}/rotate`;
export const ANNOTATION_REGENERATE = `${GROUP}/regenerate`;
export const LABEL_DATAKEY = `${GROUP}/datakey`;
/** On a pod (template): the DataKeys injected into it, comma-separated. */
export const ANNOTATION_INJECT = `${GROUP}/inject`;
/** On a workload's pod template: roll the workload when an injected DataKey regenerates. */
export const ANNOTATION_RESTART_ON_REGENERATE = `${GROUP}/restart-on-regenerate`;
/** Set on the pod template to roll a workload, as `kubectl rollout restart` does. */
export const ANNOTATION_RESTARTED_AT = `${GROUP}/restartedAt`;
/** On the workload: the generation of each DataKey it was last rolled for (JSON). */
export const ANNOTATION_RESTARTED_FOR = `${GROUP}/restarted-for`;
/** The Secret layout a DataKey's Secret is written in (values as the KMS API's strings, generations). */
export const LABEL_LAYOUT = `${GROUP}/layout`;
export const SECRET_LAYOUT = '2';
export const SECRET_TYPE = `${GROUP}/datakey`;
/** The field manager of every write the operator makes. */
export const FIELD_MANAGER = 'datakey-operator';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  finalizers?: string[];
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

export interface MasterKeySpec {
  description?: string;
  keySpec?: 'Aliyun_AES_256' | 'Aliyun_AES_128';
  enabled?: boolean;
  aliases?: string[];
  rotation?: { automatic?: boolean; interval?: string };
}

export interface MasterKeyStatus {
  keyId?: string;
  primaryKeyVersion?: string;
  keyVersions?: { keyVersionId: string; creationDate: string }[];
  lastRotationDate?: string;
  nextRotationDate?: string;
  /** The last `kms.datakey.io/rotate` value acted on: one rotation per distinct value. */
  rotateAnnotationSeen?: string;
  /** DataKeys of this key on its primary version, of all its DataKeys. */
  rotation?: { rewrapped: number; total: number };
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface MasterKey {
  apiVersion: typeof API_VERSION;
  kind: 'MasterKey';
  metadata: ObjectMeta;
  spec: MasterKeySpec;
  status?: MasterKeyStatus;
}

export interface DataKeySpec {
  masterKeyRef: { name: string };
  keySpec?: 'AES_256' | 'AES_128';
  numberOfBytes?: number;
  encryptionContext?: Record<string, string>;
  secretName?: string;
  /** The one mutable part of the spec: a fresh data key on a schedule, previous ones kept. */
  regeneration?: { interval?: string; keepPrevious?: number };
}

export type Flow = 'Standard' | 'Advance';

/** One kept generation, the same in the Secret's `generations` JSON and in status. */
export interface GenerationEntry {
  generation: number;
  keyVersionId: string;
  flow: Flow;
  /** base64 text, as GenerateDataKey returned it. */
  ciphertextBlob: string;
  creationTime: string;
}

export interface DataKeyStatus {
  keyId?: string;
  keyVersionId?: string;
  flow?: Flow;
  secretName?: string;
  /** Second copy of the (non-secret) ciphertext, so a lost Secret is restored with the same key. */
  ciphertextBlob?: string;
  currentGeneration?: number;
  lastRegenerationTime?: string;
  nextRegenerationTime?: string;
  /** Every kept generation, current included (a lost Secret is restored with all of them). */
  generations?: GenerationEntry[];
  /** The last 16 `kms.datakey.io/regenerate` values acted on: none of them regenerates again. */
  regenerateTokensSeen?: string[];
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface DataKey {
  apiVersion: typeof API_VERSION;
  kind: 'DataKey';
  metadata: ObjectMeta;
  spec: DataKeySpec;
  status?: DataKeyStatus;
}

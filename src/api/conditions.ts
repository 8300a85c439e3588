/**
 * Condition types, condition reasons and event reasons: stable names that
 * docs/operator.md, docs/injection.md and the Argo CD health scripts
 * (docs/argocd/) depend on. A test checks the documents name them.
 */

export const ConditionType = {
  /** Both kinds: the object matches its spec. */
  Ready: 'Ready',
  /** MasterKey: its DataKeys are being re-wrapped under a new primary version. */
  Rotating: 'Rotating',
} as const;

export const MasterKeyReason = {
  KeyEnabled: 'KeyEnabled',
  KeyDisabled: 'KeyDisabled',
  AliasConflict: 'AliasConflict',
  KMSError: 'KMSError',
  /** The key the MasterKey had is gone from the key store: restored, never re-created. */
  KeyMissingFromStore: 'KeyMissingFromStore',
  DeletionBlocked: 'DeletionBlocked',
  /** Reasons of the Rotating condition. */
  Rewrapping: 'Rewrapping',
  Idle: 'Idle',
} as const;

export const DataKeyReason = {
  DataKeyReady: 'DataKeyReady',
  MasterKeyNotFound: 'MasterKeyNotFound',
  MasterKeyNotReady: 'MasterKeyNotReady',
  MasterKeyDisabled: 'MasterKeyDisabled',
  SecretConflict: 'SecretConflict',
  KMSError: 'KMSError',
} as const;

export const MasterKeyEvent = {
  KeyEnabled: 'KeyEnabled',
  KeyDisabled: 'KeyDisabled',
  KeyRotated: 'KeyRotated',
  KeyDeletionScheduled: 'KeyDeletionScheduled',
} as const;

export const DataKeyEvent = {
  Generated: 'Generated',
  /** A new generation: a fresh data key, on the regenerate annotation or the schedule. */
  Regenerated: 'Regenerated',
  Rewrapped: 'Rewrapped',
  SecretRestored: 'SecretRestored',
  DataKeyReissued: 'DataKeyReissued',
  /** Warning: workloads asking to restart on regeneration cannot be rolled (RBAC). */
  WorkloadRestartForbidden: 'WorkloadRestartForbidden',
} as const;

/** Events on Deployments, StatefulSets and DaemonSets rolled after a regeneration. */
export const WorkloadEvent = {
  RestartedForDataKey: 'RestartedForDataKey',
} as const;

/**
 * Events on the root-key Secret when the root key is sealed by a KMS key: a
 * failing seal is a Warning whose reason is the failure's (`SealKeyUnavailable`,
 * `StsRefused`, ...; see SealFailure), its recovery this Normal one.
 */
export const RootKeyEvent = {
  SealRecovered: 'SealRecovered',
} as const;

/** Events on the pods that pod injection serves. */
export const PodEvent = {
  DataKeyDelivered: 'DataKeyDelivered',
  DataKeyNotReady: 'DataKeyNotReady',
  DataKeyDeliveryDenied: 'DataKeyDeliveryDenied',
  DataKeyAgentFailed: 'DataKeyAgentFailed',
} as const;

export type MasterKeyReason = (typeof MasterKeyReason)[keyof typeof MasterKeyReason];
export type DataKeyReason = (typeof DataKeyReason)[keyof typeof DataKeyReason];

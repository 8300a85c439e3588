import { GROUP, VERSION } from './types';

/**
 * The one schema source of the CRDs. `npm run gen:crds` writes them to crds/ and
 * the chart; a test fails when the committed files drift from this.
 */

type Schema = Record<string, unknown>;

const DAY = 86400;
export const MIN_ROTATION_SECONDS = 7 * DAY;
export const MAX_ROTATION_SECONDS = 365 * DAY;

const str = (extra: Schema = {}): Schema => ({ type: 'string', ...extra });

const conditions: Schema = {
  type: 'array',
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
  maxItems: 16,
  items: {
    type: 'object',
    required: ['type', 'status', 'reason', 'message', 'lastTransitionTime'],
    properties: {
      type: str({ maxLength: 64 }),
      status: str({ enum: ['True', 'False', 'Unknown'] }),
      reason: str({ maxLength: 128 }),
      message: str({ maxLength: 4096 }),
      lastTransitionTime: str({ format: 'date-time' }),
      observedGeneration: { type: 'integer', format: 'int64', minimum: 0 },
    },
  },
};

/** CEL: the interval in seconds, for `<int><d|h|m|s>` strings matched by the pattern. */
const intervalSeconds =
  "int(self.substring(0, size(self) - 1)) * (self.endsWith('d') ? 86400 : self.endsWith('h') ? 3600 : self.endsWith('m') ? 60 : 1)";

/** A rotation or regeneration interval: same syntax and bounds for both. */
function intervalSchema(minSeconds: number): Schema {
  return str({
    maxLength: 16,
    pattern: '^[0-9]{1,9}[dhms]$',
    'x-kubernetes-validations': [
      {
        rule: `${intervalSeconds} >= ${minSeconds} && ${intervalSeconds} <= ${MAX_ROTATION_SECONDS}`,
        message: `must be from ${minSeconds}s to 365d`,
      },
    ],
  });
}

export const MAX_KEEP_PREVIOUS = 10;
export const DEFAULT_KEEP_PREVIOUS = 1;

function masterKeySchema(minRotationSeconds: number): Schema {
  return {
    type: 'object',
    required: ['spec'],
    properties: {
      spec: {
        type: 'object',
        properties: {
          description: str({ maxLength: 8192 }),
          keySpec: str({ enum: ['Aliyun_AES_256', 'Aliyun_AES_128'], default: 'Aliyun_AES_256' }),
          enabled: { type: 'boolean', default: true },
          aliases: {
            type: 'array',
            maxItems: 32,
            'x-kubernetes-list-type': 'set',
            items: str({
              maxLength: 261,
              pattern: '^alias/[A-Za-z0-9_/-]{1,255}$',
              'x-kubernetes-validations': [
                {
                  rule: "self != 'alias/acs' && !self.startsWith('alias/acs/')",
                  message: 'alias/acs is reserved',
                },
              ],
            }),
          },
          rotation: {
            type: 'object',
            properties: {
              automatic: { type: 'boolean', default: false },
              interval: intervalSchema(minRotationSeconds),
            },
            'x-kubernetes-validations': [
              {
                rule: '!self.automatic || has(self.interval)',
                message: 'rotation.interval is required when rotation.automatic is true',
              },
            ],
          },
        },
        // The key spec is fixed once the key exists in the KMS.
        'x-kubernetes-validations': [
          { rule: 'self.keySpec == oldSelf.keySpec', message: 'spec.keySpec is immutable' },
        ],
      },
      status: {
        type: 'object',
        properties: {
          keyId: str(),
          primaryKeyVersion: str(),
          keyVersions: {
            type: 'array',
            items: {
              type: 'object',
              required: ['keyVersionId'],
              properties: { keyVersionId: str(), creationDate: str() },
            },
          },
          lastRotationDate: str(),
          nextRotationDate: str(),
          rotateAnnotationSeen: str(),
          rotation: {
            type: 'object',
            description: 'Re-wrap progress of the DataKeys of this key after a rotation.',
            properties: {
              rewrapped: { type: 'integer', minimum: 0 },
              total: { type: 'integer', minimum: 0 },
            },
          },
          observedGeneration: { type: 'integer', format: 'int64' },
          conditions,
        },
      },
    },
  };
}

function immutable(field: string): Schema {
  return {
    rule: `has(self.${field}) == has(oldSelf.${field}) && (!has(self.${field}) || self.${field} == oldSelf.${field})`,
    message: `spec.${field} is immutable`,
  };
}

const generationEntry: Schema = {
  type: 'object',
  required: ['generation', 'keyVersionId', 'flow', 'ciphertextBlob', 'creationTime'],
  properties: {
    generation: { type: 'integer', format: 'int64', minimum: 1 },
    keyVersionId: str(),
    flow: str({ enum: ['Standard', 'Advance'] }),
    ciphertextBlob: str({ maxLength: 4096 }),
    creationTime: str({ format: 'date-time' }),
  },
};

const dataKeySchema = (minRegenerationSeconds: number): Schema => ({
  type: 'object',
  required: ['spec'],
  properties: {
    spec: {
      type: 'object',
      required: ['masterKeyRef'],
      properties: {
        masterKeyRef: {
          type: 'object',
          required: ['name'],
          properties: {
            name: str({
              minLength: 1,
              maxLength: 253,
              pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$',
            }),
          },
        },
        keySpec: str({ enum: ['AES_256', 'AES_128'], default: 'AES_256' }),
        numberOfBytes: { type: 'integer', minimum: 1, maximum: 1024 },
        encryptionContext: {
          type: 'object',
          maxProperties: 64,
          additionalProperties: str({ maxLength: 1024 }),
          'x-kubernetes-validations': [
            {
              rule: "self.all(k, !k.startsWith('kms.datakey.io/'))",
              message: 'keys starting with kms.datakey.io/ are reserved for the identity binding',
            },
          ],
        },
        secretName: str({
          minLength: 1,
          maxLength: 253,
          pattern: '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$',
        }),
        regeneration: {
          type: 'object',
          description:
            'The one mutable part of the spec: a fresh data key every interval (and on the regenerate annotation), keeping the previous ones.',
          properties: {
            interval: intervalSchema(minRegenerationSeconds),
            keepPrevious: {
              type: 'integer',
              minimum: 0,
              maximum: MAX_KEEP_PREVIOUS,
              default: DEFAULT_KEEP_PREVIOUS,
            },
          },
        },
      },
      // What shapes every generation's data key never changes; regeneration is the one mutable part.
      'x-kubernetes-validations': [
        immutable('masterKeyRef'),
        immutable('secretName'),
        immutable('keySpec'),
        immutable('numberOfBytes'),
        immutable('encryptionContext'),
      ],
    },
    status: {
      type: 'object',
      properties: {
        keyId: str(),
        keyVersionId: str(),
        flow: str({ enum: ['Standard', 'Advance'] }),
        secretName: str(),
        ciphertextBlob: str({ maxLength: 4096 }),
        currentGeneration: { type: 'integer', format: 'int64', minimum: 1 },
        lastRegenerationTime: str({ format: 'date-time' }),
        nextRegenerationTime: str({ format: 'date-time' }),
        generations: { type: 'array', maxItems: MAX_KEEP_PREVIOUS + 1, items: generationEntry },
        regenerateTokensSeen: { type: 'array', maxItems: 16, items: str({ maxLength: 1024 }) },
        observedGeneration: { type: 'integer', format: 'int64' },
        conditions,
      },
    },
  },
});

const readyColumn = {
  name: 'Ready',
  type: 'string',
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
};
const ageColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

function crd(
  kind: string,
  plural: string,
  shortName: string,
  scope: 'Cluster' | 'Namespaced',
  schema: Schema,
  columns: Schema[],
): Schema {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${GROUP}` },
    spec: {
      group: GROUP,
      names: {
        kind,
        listKind: `${kind}List`,
        plural,
        singular: kind.toLowerCase(),
        shortNames: [shortName],
        categories: ['datakey-operator'],
      },
      scope,
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: columns,
          schema: { openAPIV3Schema: schema },
        },
      ],
    },
  };
}

export interface CrdOptions {
  /** Lower only for tests of automatic rotation and regeneration; the shipped CRDs keep 7 days. */
  minRotationSeconds?: number;
}

export function buildCrds(options: CrdOptions = {}): { file: string; crd: Schema }[] {
  const minSeconds = options.minRotationSeconds ?? MIN_ROTATION_SECONDS;
  return [
    {
      file: 'kms.datakey.io_masterkeys.yaml',
      crd: crd('MasterKey', 'masterkeys', 'mk', 'Cluster', masterKeySchema(minSeconds), [
        readyColumn,
        { name: 'Key ID', type: 'string', jsonPath: '.status.keyId' },
        { name: 'Primary Version', type: 'string', jsonPath: '.status.primaryKeyVersion' },
        ageColumn,
      ]),
    },
    {
      file: 'kms.datakey.io_datakeys.yaml',
      crd: crd('DataKey', 'datakeys', 'dk', 'Namespaced', dataKeySchema(minSeconds), [
        readyColumn,
        { name: 'Master Key', type: 'string', jsonPath: '.spec.masterKeyRef.name' },
        { name: 'Key Version', type: 'string', jsonPath: '.status.keyVersionId' },
        { name: 'Flow', type: 'string', jsonPath: '.status.flow' },
        { name: 'Generation', type: 'integer', jsonPath: '.status.currentGeneration' },
        { name: 'Secret', type: 'string', jsonPath: '.status.secretName', priority: 1 },
        ageColumn,
      ]),
    },
  ];
}

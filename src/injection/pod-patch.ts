import * as path from 'node:path';
import { ANNOTATION_INJECT } from '../api/types';
import { parseDuration } from '../common/duration';

/**
 * The mutation of an annotated Pod, as a pure function of the AdmissionReview:
 * no I/O, so every case is tested on fixtures without a cluster.
 */

export { ANNOTATION_INJECT };
export const ANNOTATION_INJECT_PATH = 'kms.datakey.io/inject-path';
/** `init` (default): a one-shot init container; `sidecar`: a native sidecar that keeps the files current. */
export const ANNOTATION_INJECT_MODE = 'kms.datakey.io/inject-mode';
export const ANNOTATION_REFRESH_INTERVAL = 'kms.datakey.io/refresh-interval';
export const DEFAULT_REFRESH_INTERVAL = '30s';
export const DEFAULT_KEY_DIR = '/var/run/datakey';
export const KEYS_VOLUME = 'datakey-keys';
export const TOKEN_VOLUME = 'datakey-agent-token';
export const AGENT_CONTAINER = 'datakey-agent';
export const AGENT_TOKEN_DIR = '/var/run/secrets/datakey';
/** The audience of the agent's token: good for the delivery endpoint only, not for the API server. */
export const AGENT_AUDIENCE = 'kms.datakey.io/agent';
const AGENT_DEFAULT_UID = 65532;
const MAX_KEYS = 32;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export interface InjectionConfig {
  agentImage: string;
  /** https URL of the delivery endpoint, as pods reach it. */
  deliveryUrl: string;
  /** PEM bundle the agent trusts for the delivery endpoint. */
  caBundle: string;
  tokenExpirationSeconds?: number;
}

interface Container {
  name: string;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  securityContext?: { runAsUser?: number; runAsGroup?: number };
  [field: string]: unknown;
}

export interface Pod {
  metadata?: { name?: string; generateName?: string; annotations?: Record<string, string> };
  spec?: {
    containers?: Container[];
    initContainers?: Container[];
    volumes?: { name: string; [field: string]: unknown }[];
    securityContext?: { runAsUser?: number; runAsGroup?: number };
    [field: string]: unknown;
  };
}

export interface AdmissionRequest {
  uid: string;
  operation?: string;
  namespace?: string;
  object?: Pod;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: { code: number; message: string };
  patchType?: 'JSONPatch';
  patch?: string;
}

export type PatchOperation = { op: 'add'; path: string; value: unknown };

/** A request the webhook must refuse, with a message naming what is wrong. */
class Refusal extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The request of an AdmissionReview as the API server sends it
 * (admission.k8s.io/v1), checked before anything is decided: anything else is
 * not an AdmissionReview, and the error names the field that is wrong.
 */
export function reviewRequest(body: unknown): AdmissionRequest {
  if (!isObject(body)) throw new Error('the body must be a JSON object');
  if (body.apiVersion !== 'admission.k8s.io/v1') {
    throw new Error('apiVersion must be admission.k8s.io/v1');
  }
  if (body.kind !== 'AdmissionReview') throw new Error('kind must be AdmissionReview');
  const request = body.request;
  if (!isObject(request)) throw new Error('request is missing');
  if (typeof request.uid !== 'string' || request.uid.length === 0 || request.uid.length > 128) {
    throw new Error('request.uid must be a string of 1 to 128 characters');
  }
  if (
    request.namespace !== undefined &&
    (typeof request.namespace !== 'string' || request.namespace.length > 63)
  ) {
    throw new Error('request.namespace must be a namespace name');
  }
  if (request.operation === 'CREATE' && !isObject(request.object)) {
    throw new Error('request.object (the pod) is missing');
  }
  return request as unknown as AdmissionRequest;
}

/** The DataKey names the annotation asks for, validated. */
export function requestedKeys(annotation: string): string[] {
  const names = [
    ...new Set(
      annotation
        .split(',')
        .map((n) => n.trim())
        .filter(Boolean),
    ),
  ];
  if (names.length === 0) {
    throw new Refusal(`annotation ${ANNOTATION_INJECT} names no DataKey`);
  }
  if (names.length > MAX_KEYS) {
    throw new Refusal(`annotation ${ANNOTATION_INJECT} names more than ${MAX_KEYS} DataKeys`);
  }
  for (const name of names) {
    if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
      throw new Refusal(
        `annotation ${ANNOTATION_INJECT}: "${name.slice(0, 64)}" is not a DataKey name (lowercase RFC 1123 subdomain)`,
      );
    }
  }
  return names;
}

/** The directory the keys go to, validated: absolute, normalized, not a system path. */
export function keyDirectory(annotation: string | undefined): string {
  if (annotation === undefined) return DEFAULT_KEY_DIR;
  const dir = annotation.trim();
  const fail = (why: string) =>
    new Refusal(`annotation ${ANNOTATION_INJECT_PATH}: "${dir.slice(0, 64)}" ${why}`);
  if (!dir.startsWith('/') || dir.length > 200) throw fail('must be an absolute path');
  if (path.posix.normalize(dir) !== dir || dir.endsWith('/')) throw fail('must be normalized');
  if (dir === '/' || /^\/(proc|sys|dev|etc|bin|sbin|usr|lib|lib64)(\/|$)/.test(dir)) {
    throw fail('is a system directory');
  }
  return dir;
}

function agentUser(pod: Pod): { runAsUser: number; runAsGroup?: number } {
  const podContext = pod.spec?.securityContext ?? {};
  const users = new Set(
    (pod.spec?.containers ?? []).map((c) => c.securityContext?.runAsUser ?? podContext.runAsUser),
  );
  // Files are written 0400: owned by the app's user they are readable by it alone.
  const uid = users.size === 1 ? [...users][0] : undefined;
  return {
    runAsUser: uid !== undefined && uid !== 0 ? uid : AGENT_DEFAULT_UID,
    ...(podContext.runAsGroup !== undefined ? { runAsGroup: podContext.runAsGroup } : {}),
  };
}

/** How the agent runs: once, or as a native sidecar refreshing on an interval. */
export type AgentMode = { sidecar: false } | { sidecar: true; refreshInterval: string };

/** The injection mode and refresh interval the pod's annotations ask for, validated. */
export function agentMode(annotations: Record<string, string> | undefined): AgentMode {
  const mode = annotations?.[ANNOTATION_INJECT_MODE]?.trim() ?? 'init';
  if (mode === 'init') {
    if (annotations?.[ANNOTATION_REFRESH_INTERVAL] !== undefined) {
      throw new Refusal(
        `annotation ${ANNOTATION_REFRESH_INTERVAL} needs ${ANNOTATION_INJECT_MODE}: sidecar`,
      );
    }
    return { sidecar: false };
  }
  if (mode !== 'sidecar') {
    throw new Refusal(
      `annotation ${ANNOTATION_INJECT_MODE}: "${mode.slice(0, 32)}" is not init or sidecar`,
    );
  }
  const refreshInterval =
    annotations?.[ANNOTATION_REFRESH_INTERVAL]?.trim() ?? DEFAULT_REFRESH_INTERVAL;
  if (parseDuration(refreshInterval, { minSeconds: 1, maxSeconds: 86400 }) === undefined) {
    throw new Refusal(
      `annotation ${ANNOTATION_REFRESH_INTERVAL}: "${refreshInterval.slice(0, 32)}" must be an integer followed by d, h, m or s, from 1s to 1d`,
    );
  }
  return { sidecar: true, refreshInterval };
}

/**
 * A native sidecar (Kubernetes >= 1.29): an init container that keeps running.
 * The kubelet starts the next containers only once its startup probe passes,
 * i.e. once every key's `.generation` file (written last) exists.
 */
function sidecarFields(keys: string[], dir: string, refreshInterval: string) {
  const written = keys.map((k) => path.posix.join(dir, `${k}.generation`));
  return {
    args: ['--refresh-interval', refreshInterval],
    restartPolicy: 'Always',
    startupProbe: {
      exec: {
        command: [
          'node',
          '-e',
          "for (const f of process.argv.slice(1)) require('fs').accessSync(f)",
          ...written,
        ],
      },
      periodSeconds: 1,
      // The agent gives up after its --timeout (2 minutes): the probe waits as long.
      failureThreshold: 150,
    },
  };
}

function agentContainer(
  pod: Pod,
  keys: string[],
  dir: string,
  config: InjectionConfig,
  mode: AgentMode,
) {
  const field = (fieldPath: string) => ({ valueFrom: { fieldRef: { fieldPath } } });
  const sidecar = mode.sidecar ? sidecarFields(keys, dir, mode.refreshInterval) : undefined;
  return {
    name: AGENT_CONTAINER,
    image: config.agentImage,
    imagePullPolicy: 'IfNotPresent',
    args: [
      'agent',
      '--url',
      config.deliveryUrl,
      '--keys',
      keys.join(','),
      '--dir',
      dir,
      '--token-file',
      `${AGENT_TOKEN_DIR}/token`,
      ...(sidecar?.args ?? []),
    ],
    env: [
      { name: 'DATAKEY_AGENT_CA', value: config.caBundle },
      { name: 'DATAKEY_POD_NAME', ...field('metadata.name') },
      { name: 'DATAKEY_POD_UID', ...field('metadata.uid') },
    ],
    volumeMounts: [
      { name: KEYS_VOLUME, mountPath: dir },
      { name: TOKEN_VOLUME, mountPath: AGENT_TOKEN_DIR, readOnly: true },
    ],
    securityContext: {
      ...agentUser(pod),
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    ...(sidecar
      ? { restartPolicy: sidecar.restartPolicy, startupProbe: sidecar.startupProbe }
      : {}),
  };
}

function volumes(config: InjectionConfig) {
  return [
    { name: KEYS_VOLUME, emptyDir: { medium: 'Memory', sizeLimit: '1Mi' } },
    {
      name: TOKEN_VOLUME,
      projected: {
        sources: [
          {
            serviceAccountToken: {
              audience: AGENT_AUDIENCE,
              expirationSeconds: config.tokenExpirationSeconds ?? 600,
              path: 'token',
            },
          },
        ],
      },
    },
  ];
}

/** Read-only mounts for every container that lacks one (a reinvocation adds only the missing). */
function mountOperations(pod: Pod, dir: string): PatchOperation[] {
  const ops: PatchOperation[] = [];
  const mount = { name: KEYS_VOLUME, mountPath: dir, readOnly: true };
  for (const kind of ['initContainers', 'containers'] as const) {
    (pod.spec?.[kind] ?? []).forEach((c, i) => {
      if (c.name === AGENT_CONTAINER) return;
      const mounts = c.volumeMounts ?? [];
      const own = mounts.find((m) => m.name === KEYS_VOLUME);
      // The agent alone writes the keys: any other container gets them read-only.
      if (own && own.readOnly !== true) {
        throw new Refusal(
          `container ${String(c.name).slice(0, 63)} mounts volume ${KEYS_VOLUME} writable; only ${AGENT_CONTAINER} writes the keys (readOnly: true, or leave the mount to the webhook)`,
        );
      }
      if (own) return;
      const clash = mounts.find((m) => m.mountPath === dir);
      if (clash) {
        throw new Refusal(
          `container ${c.name} already mounts volume ${clash.name} at ${dir}; set ${ANNOTATION_INJECT_PATH} to another directory`,
        );
      }
      const base = `/spec/${kind}/${i}/volumeMounts`;
      ops.push(
        c.volumeMounts
          ? { op: 'add', path: `${base}/-`, value: mount }
          : { op: 'add', path: base, value: [mount] },
      );
    });
  }
  return ops;
}

/** The JSON Patch that injects the keys into `pod`, or [] when there is nothing to do. */
export function injectionPatch(pod: Pod, config: InjectionConfig): PatchOperation[] {
  const annotation = pod.metadata?.annotations?.[ANNOTATION_INJECT];
  if (annotation === undefined) return [];
  const keys = requestedKeys(annotation);
  const dir = keyDirectory(pod.metadata?.annotations?.[ANNOTATION_INJECT_PATH]);
  const mode = agentMode(pod.metadata?.annotations);
  const hasVolume = (pod.spec?.volumes ?? []).some((v) => v.name === KEYS_VOLUME);
  const hasAgent = (pod.spec?.initContainers ?? []).some((c) => c.name === AGENT_CONTAINER);
  const appNamedAgent = (pod.spec?.containers ?? []).some((c) => c.name === AGENT_CONTAINER);
  if (hasVolume !== hasAgent || appNamedAgent) {
    throw new Refusal(
      `the names ${KEYS_VOLUME} (volume) and ${AGENT_CONTAINER} (init container) are reserved for injection`,
    );
  }
  // Mounts first: inserting the agent at index 0 shifts the init containers after it.
  const ops = mountOperations(pod, dir);
  if (hasAgent) return ops;
  const added = volumes(config);
  if (pod.spec?.volumes) {
    for (const v of added) ops.push({ op: 'add', path: '/spec/volumes/-', value: v });
  } else ops.push({ op: 'add', path: '/spec/volumes', value: added });
  const agent = agentContainer(pod, keys, dir, config, mode);
  ops.push(
    pod.spec?.initContainers
      ? { op: 'add', path: '/spec/initContainers/0', value: agent }
      : { op: 'add', path: '/spec/initContainers', value: [agent] },
  );
  return ops;
}

/** The AdmissionReview answer: CREATEs of annotated Pods are patched, anything else passes untouched. */
export function admit(request: AdmissionRequest, config: InjectionConfig): AdmissionResponse {
  if (request.operation !== 'CREATE' || !request.object) return { uid: request.uid, allowed: true };
  try {
    const ops = injectionPatch(request.object, config);
    if (ops.length === 0) return { uid: request.uid, allowed: true };
    return {
      uid: request.uid,
      allowed: true,
      patchType: 'JSONPatch',
      patch: Buffer.from(JSON.stringify(ops)).toString('base64'),
    };
  } catch (err) {
    // The API server sends decoded Pods; anything else reaching this port is refused, never a 5xx.
    const message =
      err instanceof Refusal ? err.message : `the pod cannot be read: ${(err as Error).message}`;
    return { uid: request.uid, allowed: false, status: { code: 400, message } };
  }
}

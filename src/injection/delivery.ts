import { ConditionType, PodEvent } from '../api/conditions';
import { GROUP } from '../api/types';
import { findCondition } from '../runtime/conditions';
import type { InjectionContext } from './context';
import { currentOf, generationsFromSecret, openWrapped, secretNameOf } from '../datakey';
import { KmsError } from '../kms';
import { isNotFound, type KubeObject } from '../runtime/kube-client';
import { AGENT_AUDIENCE, ANNOTATION_INJECT, requestedKeys } from './pod-patch';

/**
 * The delivery endpoint's decisions: who the caller is (TokenReview, bound to a
 * live pod), what it may have (the pod's own annotation and a SubjectAccessReview
 * for `decrypt`), and the plaintext only when both hold. Nothing is cached.
 */

export type DeliveryResult =
  'delivered' | 'unauthenticated' | 'forbidden' | 'not_ready' | 'invalid' | 'throttled' | 'error';

export interface DeliveryAnswer {
  status: number;
  result: DeliveryResult;
  message: string;
  /** Only on success; the caller zeroes them after sending (zeroKeys). */
  keys?: DeliveredKey[];
}

/** One DataKey's every kept generation, opened; `generation` names the current one. */
export interface DeliveredKey {
  name: string;
  generation: number;
  generations: { generation: number; plaintext: Buffer }[];
}

/** The current generation's plaintext of a delivered key. */
export const currentPlaintext = (key: DeliveredKey): Buffer =>
  (key.generations.find((g) => g.generation === key.generation) as { plaintext: Buffer }).plaintext;

export function zeroKeys(keys: DeliveredKey[]): void {
  for (const k of keys) for (const g of k.generations) g.plaintext.fill(0);
}

export interface AgentClaim {
  keys: string[];
  podName?: string;
  podUid?: string;
}

interface ReviewedUser {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

interface PodIdentity {
  namespace: string;
  serviceAccount: string;
  podName: string;
  podUid: string;
  user: ReviewedUser;
}

type PodObject = KubeObject & { metadata: KubeObject['metadata'] };

const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';
const SA_PREFIX = 'system:serviceaccount:';

class Denied extends Error {
  constructor(
    readonly status: number,
    readonly result: DeliveryResult,
    message: string,
    /** The pod to record the failure on, once known. */
    readonly pod?: PodObject,
  ) {
    super(message);
  }
}

/** Validates the agent's JSON body: `{keys: [...], podName?, podUid?}`. */
export function parseClaim(body: unknown): AgentClaim {
  const b = body as Partial<Record<string, unknown>> | null;
  if (!b || typeof b !== 'object') throw new Denied(400, 'invalid', 'body must be a JSON object');
  if (!Array.isArray(b.keys) || !b.keys.every((k) => typeof k === 'string')) {
    throw new Denied(400, 'invalid', 'keys must be an array of DataKey names');
  }
  for (const field of ['podName', 'podUid'] as const) {
    if (b[field] !== undefined && (typeof b[field] !== 'string' || b[field].length > 253)) {
      throw new Denied(400, 'invalid', `${field} must be a string of at most 253 characters`);
    }
  }
  try {
    requestedKeys((b.keys as string[]).join(','));
  } catch (err) {
    throw new Denied(400, 'invalid', `keys: ${(err as Error).message}`);
  }
  return { keys: b.keys as string[], podName: b.podName as string, podUid: b.podUid as string };
}

async function review(
  ctx: InjectionContext,
  token: string,
  audiences?: string[],
): Promise<{ authenticated?: boolean; user?: ReviewedUser; audiences?: string[] }> {
  const answer = await ctx.client.create<KubeObject & { status?: Record<string, unknown> }>(
    '/apis/authentication.k8s.io/v1/tokenreviews',
    {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      metadata: { name: '' },
      spec: { token, ...(audiences ? { audiences } : {}) },
    },
  );
  return (answer.status ?? {}) as { authenticated?: boolean; user?: ReviewedUser };
}

function podIdentity(user: ReviewedUser | undefined): Omit<PodIdentity, 'user'> | undefined {
  const [namespace, serviceAccount] = (user?.username ?? '').startsWith(SA_PREFIX)
    ? (user?.username ?? '').slice(SA_PREFIX.length).split(':')
    : [];
  const podName = user?.extra?.[POD_NAME_EXTRA]?.[0];
  const podUid = user?.extra?.[POD_UID_EXTRA]?.[0];
  if (!namespace || !serviceAccount || !podName || !podUid) return undefined;
  return { namespace, serviceAccount, podName, podUid };
}

async function livePod(ctx: InjectionContext, id: Omit<PodIdentity, 'user'>) {
  try {
    const pod = await ctx.client.get<PodObject>(
      `/api/v1/namespaces/${id.namespace}/pods/${id.podName}`,
    );
    if (pod.metadata.uid === id.podUid) return pod;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  return undefined;
}

/**
 * The audiences a JWT claims, read without verification: only to ask the API
 * server whether it is a genuine token for another audience, so the refusal
 * can be recorded on the right pod.
 */
function claimedAudiences(token: string): string[] {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as {
      aud?: unknown;
    };
    const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    return aud.filter((a): a is string => typeof a === 'string' && a.length <= 256).slice(0, 4);
  } catch {
    return [];
  }
}

/** The token's pod, alive, with the same UID; a wrong audience is named on that pod's events. */
async function authenticate(ctx: InjectionContext, token: string) {
  const status = await review(ctx, token, [AGENT_AUDIENCE]);
  const id = podIdentity(status.user);
  if (!status.authenticated || !status.audiences?.includes(AGENT_AUDIENCE)) {
    const audiences = claimedAudiences(token).filter((a) => a !== AGENT_AUDIENCE);
    const other =
      audiences.length > 0 ? podIdentity((await review(ctx, token, audiences)).user) : undefined;
    const pod = other ? await livePod(ctx, other) : undefined;
    throw new Denied(
      401,
      'unauthenticated',
      pod
        ? `the token is not for audience ${AGENT_AUDIENCE}`
        : 'the token was not accepted by the API server',
      pod,
    );
  }
  if (!id) throw new Denied(401, 'unauthenticated', 'the token is not bound to a pod');
  const pod = await livePod(ctx, id);
  if (!pod) {
    throw new Denied(
      401,
      'unauthenticated',
      `the token's pod ${id.namespace}/${id.podName} no longer exists`,
    );
  }
  return { identity: { ...id, user: status.user as ReviewedUser }, pod };
}

/** What the pod's own annotation asks for; nothing when it has none or a bad one. */
function askedKeys(pod: PodObject): string[] {
  try {
    return requestedKeys(pod.metadata.annotations?.[ANNOTATION_INJECT] ?? '');
  } catch {
    return [];
  }
}

function checkClaim(claim: AgentClaim, id: PodIdentity, pod: PodObject): void {
  if (
    (claim.podName && claim.podName !== id.podName) ||
    (claim.podUid && claim.podUid !== id.podUid)
  ) {
    throw new Denied(
      403,
      'forbidden',
      `the token belongs to pod ${id.namespace}/${id.podName}, not to ${claim.podName ?? claim.podUid}`,
      pod,
    );
  }
  const asked = new Set(askedKeys(pod));
  const extra = claim.keys.find((k) => !asked.has(k));
  if (extra) {
    throw new Denied(
      403,
      'forbidden',
      `pod ${id.namespace}/${id.podName} does not ask for DataKey ${extra} in its ${ANNOTATION_INJECT} annotation`,
      pod,
    );
  }
}

async function authorize(ctx: InjectionContext, id: PodIdentity, name: string): Promise<boolean> {
  const answer = await ctx.client.create<KubeObject & { status?: { allowed?: boolean } }>(
    '/apis/authorization.k8s.io/v1/subjectaccessreviews',
    {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SubjectAccessReview',
      metadata: { name: '' },
      spec: {
        user: id.user.username,
        uid: id.user.uid,
        groups: id.user.groups,
        extra: id.user.extra,
        resourceAttributes: {
          namespace: id.namespace,
          verb: 'decrypt',
          group: GROUP,
          resource: 'datakeys',
          name,
        },
      },
    },
  );
  return answer.status?.allowed === true;
}

/**
 * Every kept generation's plaintext, from the cached DataKey and its Secret: all
 * or none. Undefined when the core may only be behind (a key version this
 * replica has not loaded yet), unless `reloaded`: then the KMS error stands.
 */
function plaintextsOf(
  ctx: InjectionContext,
  namespace: string,
  name: string,
  pod: PodObject,
  reloaded: boolean,
): DeliveredKey | undefined {
  const dataKey = ctx.dataKeys.get(`${namespace}/${name}`);
  if (!dataKey) {
    throw new Denied(
      409,
      'not_ready',
      `DataKey ${name} does not exist in namespace ${namespace}`,
      pod,
    );
  }
  const ready = findCondition(dataKey.status?.conditions, ConditionType.Ready);
  if (ready?.status !== 'True') {
    throw new Denied(
      409,
      'not_ready',
      `DataKey ${name} is not Ready (${ready?.reason ?? 'not reconciled yet'})`,
      pod,
    );
  }
  const secret = ctx.secrets.get(`${namespace}/${secretNameOf(dataKey)}`);
  const stored = generationsFromSecret(secret);
  if (stored.length === 0) {
    throw new Denied(
      409,
      'not_ready',
      `the Secret of DataKey ${name} is missing or incomplete`,
      pod,
    );
  }
  const key: DeliveredKey = { name, generation: currentOf(stored).generation, generations: [] };
  try {
    for (const wrapped of stored) {
      const plaintext = openWrapped(ctx.core, dataKey, wrapped, ctx.metrics.kmsCalls);
      key.generations.push({ generation: wrapped.generation, plaintext });
    }
    return key;
  } catch (err) {
    zeroKeys([key]);
    if (reloaded || !(err instanceof KmsError) || err.code === 'InvalidParameter') throw err;
    return undefined; // e.g. a key version this replica has not loaded yet: reload and retry
  }
}

/**
 * One DataKey opened, the core reloaded once if it may be behind. A ciphertext
 * that still does not open (tampered, its master key disabled or gone) is the
 * DataKey's state, not a fault of this server: 409 naming the KMS error.
 */
async function openedKey(
  ctx: InjectionContext,
  namespace: string,
  name: string,
  pod: PodObject,
): Promise<DeliveredKey> {
  try {
    const key = plaintextsOf(ctx, namespace, name, pod, false);
    if (key) return key;
    // A copy written through another replica may name a key version this core
    // has not loaded yet: one shared, rate-limited reload, then the answer.
    await ctx.core.reloadAfterMiss();
    return plaintextsOf(ctx, namespace, name, pod, true) as DeliveredKey;
  } catch (err) {
    if (!(err instanceof KmsError)) throw err;
    throw new Denied(
      409,
      'not_ready',
      `the ciphertext of DataKey ${name} does not open (${err.code})`,
      pod,
    );
  }
}

async function decryptAll(
  ctx: InjectionContext,
  id: PodIdentity,
  claim: AgentClaim,
  pod: PodObject,
) {
  const keys: DeliveredKey[] = [];
  try {
    for (const name of claim.keys) keys.push(await openedKey(ctx, id.namespace, name, pod));
    return keys;
  } catch (err) {
    zeroKeys(keys);
    throw err;
  }
}

/** Decides one agent request. Failures are recorded as Events on the pod once it is known. */
export async function deliver(
  ctx: InjectionContext,
  token: string,
  body: unknown,
): Promise<DeliveryAnswer> {
  try {
    const claim = parseClaim(body);
    if (!token) throw new Denied(401, 'unauthenticated', 'a bearer token is required');
    const { identity, pod } = await authenticate(ctx, token);
    checkClaim(claim, identity, pod);
    for (const name of claim.keys) {
      if (!(await authorize(ctx, identity, name))) {
        throw new Denied(
          403,
          'forbidden',
          `forbidden: serviceaccount ${identity.namespace}:${identity.serviceAccount} cannot decrypt datakey ${name} in namespace ${identity.namespace}`,
          pod,
        );
      }
    }
    const keys = await decryptAll(ctx, identity, claim, pod);
    ctx.events.record(
      pod,
      'Normal',
      PodEvent.DataKeyDelivered,
      `Delivered DataKeys ${claim.keys.join(', ')}`,
    );
    return { status: 200, result: 'delivered', message: 'ok', keys };
  } catch (err) {
    if (!(err instanceof Denied)) throw err;
    if (err.pod) {
      const reason =
        err.result === 'not_ready' ? PodEvent.DataKeyNotReady : PodEvent.DataKeyDeliveryDenied;
      ctx.events.record(err.pod, 'Warning', reason, err.message);
    }
    return { status: err.status, result: err.result, message: err.message };
  }
}

/** The agent reports a failure of its own (e.g. no tmpfs): recorded on its pod after the same authentication. */
export async function reportAgentFailure(
  ctx: InjectionContext,
  token: string,
  body: unknown,
): Promise<DeliveryAnswer> {
  const message = (body as { message?: unknown } | null)?.message;
  if (typeof message !== 'string' || message.length === 0 || message.length > 1024) {
    return {
      status: 400,
      result: 'invalid',
      message: 'message must be a string of 1..1024 characters',
    };
  }
  try {
    const { pod } = await authenticate(ctx, token);
    ctx.events.record(pod, 'Warning', PodEvent.DataKeyAgentFailed, message);
    return { status: 200, result: 'error', message: 'recorded' };
  } catch (err) {
    if (!(err instanceof Denied)) throw err;
    return { status: err.status, result: err.result, message: err.message };
  }
}

import type { Logger } from '../common/logger';
import { FIELD_MANAGER } from '../api/types';
import { isNotFound, type KubeClient, type KubeObject } from '../runtime/kube-client';
import { ANNOTATION_INJECT } from './pod-patch';
import { WEBHOOK_PATH } from './endpoints';

/**
 * The MutatingWebhookConfiguration. Outside a cluster the operator registers it
 * itself with a loopback `url`; in a cluster the chart creates it (so `helm
 * uninstall` removes it) with a Service reference and the operator only keeps
 * its caBundle current, never re-creating a configuration that was deleted.
 */

export const WEBHOOK_NAME = 'inject.kms.datakey.io';
const MWC_PATH = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations';

export type WebhookClient =
  { url: string } | { service: { name: string; namespace: string; path: string; port: number } };

type Webhook = { name: string; clientConfig?: { caBundle?: string } };
type WebhookConfiguration = KubeObject & { webhooks?: Webhook[] };

/**
 * Only annotated pods reach the webhook (matchConditions), never one of the
 * operator's own namespace, so an outage cannot block unrelated pods or the
 * operator itself; annotated pods fail closed rather than start without keys.
 */
export function webhookConfiguration(
  name: string,
  operatorNamespace: string,
  client: WebhookClient,
  caBundle?: string,
) {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name, labels: { 'app.kubernetes.io/name': 'datakey-operator' } },
    webhooks: [
      {
        name: WEBHOOK_NAME,
        clientConfig: {
          ...client,
          ...(caBundle ? { caBundle: Buffer.from(caBundle).toString('base64') } : {}),
        },
        rules: [
          {
            operations: ['CREATE'],
            apiGroups: [''],
            apiVersions: ['v1'],
            resources: ['pods'],
            scope: 'Namespaced',
          },
        ],
        matchConditions: [
          {
            name: 'annotated',
            expression: `has(object.metadata.annotations) && '${ANNOTATION_INJECT}' in object.metadata.annotations`,
          },
        ],
        namespaceSelector: {
          matchExpressions: [
            { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [operatorNamespace] },
          ],
        },
        failurePolicy: 'Fail',
        sideEffects: 'None',
        reinvocationPolicy: 'IfNeeded',
        timeoutSeconds: 5,
        admissionReviewVersions: ['v1'],
      },
    ],
  };
}

export const urlClient = (base: string): WebhookClient => ({ url: `${base}${WEBHOOK_PATH}` });

export const serviceClient = (name: string, namespace: string): WebhookClient => ({
  service: { name, namespace, path: WEBHOOK_PATH, port: 443 },
});

/** Registers (url) or updates the caBundle of (service) the configuration `name`. */
export async function ensureRegistration(
  client: KubeClient,
  name: string,
  operatorNamespace: string,
  webhookClient: WebhookClient,
  caBundle: string,
  logger: Logger,
): Promise<void> {
  if ('url' in webhookClient) {
    await client.apply(
      `${MWC_PATH}/${name}`,
      webhookConfiguration(name, operatorNamespace, webhookClient, caBundle),
      FIELD_MANAGER,
    );
    return;
  }
  let current: WebhookConfiguration;
  try {
    current = await client.get<WebhookConfiguration>(`${MWC_PATH}/${name}`);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    logger.warn({ name }, 'MutatingWebhookConfiguration not found: annotated pods are refused');
    return;
  }
  const encoded = Buffer.from(caBundle).toString('base64');
  const ops = (current.webhooks ?? []).flatMap((w, i) =>
    w.name === WEBHOOK_NAME && w.clientConfig?.caBundle !== encoded
      ? [{ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: encoded }]
      : [],
  );
  if (ops.length === 0) return;
  // JSON Patch never creates: a configuration deleted meanwhile (helm uninstall) stays deleted.
  await client.request('PATCH', `${MWC_PATH}/${name}`, {
    body: [{ op: 'test', path: '/metadata/uid', value: current.metadata.uid }, ...ops],
    contentType: 'application/json-patch+json',
  });
  logger.info({ name }, 'webhook caBundle updated');
}

/**
 * Outside a cluster the registration points at this process: a clean stop
 * removes it, unless another process has registered its own URL under the name.
 */
export async function removeUrlRegistration(
  client: KubeClient,
  name: string,
  webhookClient: WebhookClient,
): Promise<void> {
  if (!('url' in webhookClient)) return;
  try {
    const current = await client.get<WebhookConfiguration>(`${MWC_PATH}/${name}`);
    const url = (current.webhooks?.[0]?.clientConfig as { url?: string } | undefined)?.url;
    if (url !== webhookClient.url) return;
    await client.delete(`${MWC_PATH}/${name}`, {});
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

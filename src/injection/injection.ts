import { sleep } from '../common/wait';
import type { InjectionContext } from './context';
import { ensureRegistration, removeUrlRegistration, type WebhookClient } from './registration';
import { DeliveryLimits, type DeliveryRates } from './delivery-limits';
import { serveInjection, type InjectionServer } from './server';
import { reconcileServingSecret, type CertPolicy, type ServingMaterial } from './serving-certs';

export interface InjectionOptions {
  listen: { host: string; port: number };
  /** Name of the MutatingWebhookConfiguration. */
  webhookConfiguration: string;
  /** Secret (operator namespace) with the CA and serving certificate. */
  secretName: string;
  webhookClient: WebhookClient;
  /** https URL of the delivery endpoint as pods reach it. */
  deliveryUrl: string;
  agentImage: string;
  /** Agent requests a second, per pod and in all (429 with Retry-After beyond). */
  rateLimit: DeliveryRates;
  certs: CertPolicy;
  /** How often the certificate and the registration are checked. */
  refreshMs?: number;
  /**
   * How long to keep serving after a stop begins: behind a Service, the pod
   * leaves the endpoints a moment after it starts terminating, and admissions
   * routed to it meanwhile must still be answered.
   */
  drainMs?: number;
}

export interface RunningInjection {
  server: InjectionServer;
  stop(): Promise<void>;
}

/**
 * Serves the webhook and the delivery endpoint with the shared certificate,
 * registers the webhook, and keeps both current: a renewal written by any
 * replica is served by all of them within one refresh.
 */
export async function startInjection(
  ctx: InjectionContext,
  namespace: string,
  options: InjectionOptions,
): Promise<RunningInjection> {
  const reconcile = () =>
    reconcileServingSecret(ctx.client, namespace, options.secretName, options.certs, ctx.logger);
  let material: ServingMaterial = await reconcile();
  const config = () => ({
    agentImage: options.agentImage,
    deliveryUrl: options.deliveryUrl,
    caBundle: material.caBundle,
  });
  const limits = new DeliveryLimits(ctx.client, options.rateLimit, ctx.logger);
  const server = await serveInjection(ctx, options.listen, material, config, limits);
  const register = () =>
    ensureRegistration(
      ctx.client,
      options.webhookConfiguration,
      namespace,
      options.webhookClient,
      material.caBundle,
      ctx.logger,
    );
  await register();

  const refresh = async () => {
    const next = await reconcile();
    if (next.cert !== material.cert) {
      server.setMaterial(next);
      ctx.logger.info('serving the renewed webhook certificate');
    }
    material = next;
    await register();
  };
  let refreshing: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    refreshing = refresh().catch((err: Error) =>
      ctx.logger.warn({ err: err.message }, 'webhook certificate refresh failed'),
    );
  }, options.refreshMs ?? 15_000);
  timer.unref();
  ctx.logger.info(
    { url: server.url, deliveryUrl: options.deliveryUrl, webhook: options.webhookClient },
    'pod injection serving',
  );
  return {
    server,
    async stop() {
      server.drain();
      clearInterval(timer);
      await refreshing; // or it could register again after the removal below
      await removeUrlRegistration(
        ctx.client,
        options.webhookConfiguration,
        options.webhookClient,
      ).catch((err: Error) =>
        ctx.logger.warn({ err: err.message }, 'could not remove the webhook registration'),
      );
      await sleep(options.drainMs ?? 0);
      await server.close();
    },
  };
}

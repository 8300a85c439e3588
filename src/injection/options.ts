import * as os from 'node:os';
import { parseDuration } from '../common/duration';
import { DEFAULT_GLOBAL_RATE, DEFAULT_PER_POD_RATE } from './delivery-limits';
import type { InjectionOptions } from './injection';
import { serviceClient, urlClient } from './registration';

/** Command-line flags of `datakey operator` that configure injection. */
export const INJECTION_FLAGS = {
  'webhook-listen': { type: 'string' },
  'webhook-service': { type: 'string' },
  'webhook-url': { type: 'string' },
  'delivery-url': { type: 'string' },
  'webhook-configuration': { type: 'string' },
  'webhook-secret': { type: 'string' },
  'agent-image': { type: 'string' },
  'delivery-rate-limit': { type: 'string' },
  'delivery-global-rate-limit': { type: 'string' },
  // Test-only: short-lived serving certificates to exercise renewal.
  'webhook-cert-validity': { type: 'string' },
} as const;

export type InjectionFlags = Partial<Record<keyof typeof INJECTION_FLAGS, string>>;

export const DEFAULT_AGENT_IMAGE = 'datakey.local/datakey-operator:dev';
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export class FlagError extends Error {}

function httpsBase(flag: string, value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new FlagError(`--${flag} must be an https URL, e.g. https://127.0.0.1:9443`);
  }
  if (url.protocol !== 'https:' || url.pathname !== '/' || url.search || url.username) {
    throw new FlagError(`--${flag} must be an https URL without path, query or user`);
  }
  return url;
}

/** The first external IPv4 of this machine: pods on a node here reach it through their gateway. */
function machineAddress(): string {
  for (const addresses of Object.values(os.networkInterfaces())) {
    const v4 = addresses?.find((a) => a.family === 'IPv4' && !a.internal);
    if (v4) return v4.address;
  }
  return '127.0.0.1';
}

/** A whole number of requests a second, 0 for unlimited. */
function rateFlag(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d{1,6}$/.test(value)) {
    throw new FlagError(`--${flag} must be a whole number of requests per second (0 = unlimited)`);
  }
  return Number(value);
}

const hostOf = (url: URL) => url.hostname.replace(/^\[|\]$/g, '');

/**
 * In a cluster (`--webhook-service`) the API server and the agents use the
 * Service; outside one the API server calls a loopback URL and pods call the
 * machine's address. Either can be overridden.
 */
export function injectionOptions(
  flags: InjectionFlags,
  listen: { host: string; port: number } | undefined,
  namespace: string,
): InjectionOptions | undefined {
  if (!listen) return undefined;
  const service = flags['webhook-service'];
  if (service !== undefined && !DNS_LABEL.test(service)) {
    throw new FlagError('--webhook-service must be a Service name');
  }
  if (service !== undefined && flags['webhook-url'] !== undefined) {
    throw new FlagError('--webhook-service and --webhook-url exclude each other');
  }
  const serviceHosts = service
    ? [
        service,
        `${service}.${namespace}`,
        `${service}.${namespace}.svc`,
        `${service}.${namespace}.svc.cluster.local`,
      ]
    : [];
  const webhookUrl = service
    ? undefined
    : httpsBase('webhook-url', flags['webhook-url'] ?? `https://127.0.0.1:${listen.port}`);
  const deliveryUrl = httpsBase(
    'delivery-url',
    flags['delivery-url'] ??
      (service ? `https://${serviceHosts[2]}` : `https://${machineAddress()}:${listen.port}`),
  );
  const validity = flags['webhook-cert-validity'] ?? '365d';
  const servingSeconds = parseDuration(validity, { minSeconds: 10, maxSeconds: 365 * 86400 });
  if (servingSeconds === undefined) {
    throw new FlagError(
      '--webhook-cert-validity must be an integer followed by d, h, m or s, from 10s to 365d',
    );
  }
  const hosts = [
    ...serviceHosts,
    ...(webhookUrl ? [hostOf(webhookUrl)] : []),
    hostOf(deliveryUrl),
    '127.0.0.1',
    'localhost',
  ];
  return {
    listen,
    webhookConfiguration: flags['webhook-configuration'] ?? 'datakey-operator',
    secretName: flags['webhook-secret'] ?? 'datakey-operator-webhook-tls',
    webhookClient: webhookUrl
      ? urlClient(webhookUrl.origin)
      : serviceClient(service ?? '', namespace),
    deliveryUrl: deliveryUrl.origin,
    agentImage: flags['agent-image'] ?? process.env.DATAKEY_AGENT_IMAGE ?? DEFAULT_AGENT_IMAGE,
    rateLimit: {
      perPod: rateFlag('delivery-rate-limit', flags['delivery-rate-limit'], DEFAULT_PER_POD_RATE),
      global: rateFlag(
        'delivery-global-rate-limit',
        flags['delivery-global-rate-limit'],
        DEFAULT_GLOBAL_RATE,
      ),
    },
    certs: {
      hosts: [...new Set(hosts)],
      servingValidityMs: servingSeconds * 1000,
      caValidityMs: servingSeconds * 10_000,
    },
    refreshMs: Math.min(15_000, (servingSeconds * 1000) / 10),
    drainMs: service ? 5000 : 0,
  };
}

#!/usr/bin/env node
import { parseArgs } from 'node:util';
import type { KmsService } from './kms-api/serve';
import { parseDuration } from './common/duration';
// Each command loads only its own modules: the agent, an init container, starts in a blink.

const USAGE = `Usage: datakey <command> [options]

Commands:
  kms serve --listen HOST:PORT --data-dir DIR [--tls-cert F --tls-key F] [--rate-limit N]
            [--instance-listen HOST:PORT [--instance-host NAME]...] [--sts-trust FILE]
      Serve the Alibaba-compatible KMS API. Credentials of the one account come from
      DATAKEY_ACCESS_KEY_ID and DATAKEY_ACCESS_KEY_SECRET. --rate-limit is calls per
      second per account per operation (default 750, 0 = unlimited). --instance-listen
      also serves the KMS Instance API (dkms-gcs-0.2, TLS) of the server's one KMS
      instance; its certificate, from the CA GetKmsInstance returns, covers the listen
      address, localhost and every --instance-host NAME. --sts-trust also answers STS
      AssumeRoleWithOIDC for the OIDC providers and roles FILE names (for tests of the
      root of trust; serve it over TLS).
  operator [--kubeconfig F] [--namespace NS] [--kms-listen HOST:PORT] [--metrics-listen HOST:PORT]
           [--kms-instance-listen HOST:PORT [--kms-instance-host NAME]...]
           [--root-key-file F] [--rewrap-rate N] [--workers N]
           [--seal alicloudkms --seal-key-id ID --seal-endpoint HOST[:PORT] --seal-region R
            [--sts-endpoint HOST[:PORT]] [--seal-previous-context cluster=UID,namespace=NS]
            [--unseal-root-key]]
      Run the MasterKey and DataKey controllers (leader-elected). NS (default
      datakey-system) holds the operator's own state. In-cluster config or
      KUBECONFIG. --kms-listen also serves the KMS API over the embedded core
      (credentials as for kms serve). --kms-instance-listen also serves the KMS
      Instance API of the core's built-in instance, which holds every MasterKey's
      key; its certificate covers the listen address, localhost and every
      --kms-instance-host NAME (repeatable; e.g. the Service's DNS name).
      /metrics, /healthz and /readyz are served on
      --metrics-listen (default 0.0.0.0:8080). After a master key rotates, its
      DataKeys are re-wrapped at --rewrap-rate per second (default 100, 0 = unlimited).
      Reconciles run on --workers workers (default 4, at most 64).
      --seal alicloudkms keeps the root key sealed by an Alibaba Cloud KMS key (only the
      blob is stored; a plaintext root key is sealed in place on the first start).
      Credentials: RRSA (ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN,
      ALIBABA_CLOUD_OIDC_TOKEN_FILE; STS at --sts-endpoint) or ALIBABA_CLOUD_ACCESS_KEY_ID,
      _SECRET (and _SECURITY_TOKEN). --seal-previous-context re-seals a key store restored
      from another cluster or namespace; --unseal-root-key writes the root key back in
      the clear and exits (going back to the embedded default).
      Pod injection (webhook and key delivery, TLS) is served on --webhook-listen
      (default 0.0.0.0:9443, none = off):
        [--webhook-service NAME]      in a cluster: the Service of that port; the webhook
                                      and the agents use https://NAME.NS.svc
        [--webhook-url URL]           outside one: where the API server calls the webhook
                                      (default https://127.0.0.1:PORT)
        [--delivery-url URL]          where agents fetch keys (default: the Service, or
                                      https://<this machine's address>:PORT)
        [--webhook-configuration N]   MutatingWebhookConfiguration (default datakey-operator)
        [--webhook-secret N]          CA and serving certificate (default
                                      datakey-operator-webhook-tls in NS)
        [--agent-image IMAGE]         image of the injected agent (default
                                      $DATAKEY_AGENT_IMAGE or datakey.local/datakey-operator:dev)
        [--delivery-rate-limit N]     agent requests a second per pod (default 2; 0 = unlimited)
        [--delivery-global-rate-limit N]  ... for all pods together (default 50); 429 beyond
  agent --url URL --keys a,b --dir DIR --token-file F [--timeout 2m] [--refresh-interval 30s]
      The init container injected into annotated pods: proves the pod's identity
      with its projected token, fetches the named DataKeys over TLS (CA in
      DATAKEY_AGENT_CA) and writes each, mode 0400, into DIR, which must be a tmpfs.
  dev [--once] [--kms-listen HOST:PORT] [--webhook-listen HOST:PORT]
      Development build only (npm run dev in a checkout; not in the image): starts the local control
      plane, installs the CRDs, runs the operator with the KMS API on
      127.0.0.1:18080 (a development credential in ./.datakey-dev/credentials.env),
      applies examples/, waits until they are Ready and prints them. With a node,
      it also builds the operator image, serves pod injection on 0.0.0.0:18443 and
      runs examples/workload/, whose pod gets the orders key in its memory volume.
      --once exits after that; otherwise it runs until Ctrl-C.
`;

export class UsageError extends Error {}

export interface Stoppable {
  stop(): Promise<void>;
}

export function parseListen(
  value: string | undefined,
  flag = '--listen',
): { host: string; port: number } {
  const match = value ? /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value) : null;
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535)
    throw new UsageError(`${flag} must be HOST:PORT, e.g. 127.0.0.1:8080`);
  return { host: match[1].replace(/^\[|\]$/g, ''), port };
}

function parseRate(value: string, flag: string): number {
  if (!/^\d{1,9}$/.test(value))
    throw new UsageError(`${flag} must be a whole number (0 = unlimited)`);
  return Number(value);
}

function parseWorkers(value: string): number {
  if (!/^\d{1,2}$/.test(value) || Number(value) < 1 || Number(value) > 64)
    throw new UsageError('--workers must be a whole number from 1 to 64');
  return Number(value);
}

/** A test-only duration flag (lowers a product minimum); undefined when not given. */
function testDuration(value: string | undefined, flag: string): number | undefined {
  if (!value) return undefined;
  const seconds = parseDuration(value, { minSeconds: 1, maxSeconds: 365 * 86400 });
  if (seconds === undefined) {
    throw new UsageError(`${flag} must be an integer followed by d, h, m or s, from 1s to 365d`);
  }
  return seconds;
}

async function kmsServe(args: string[]): Promise<KmsService> {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: 'string' },
      'data-dir': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'rate-limit': { type: 'string' },
      'instance-listen': { type: 'string' },
      'instance-host': { type: 'string', multiple: true },
      'sts-trust': { type: 'string' },
    },
    strict: true,
  });
  if (!values['data-dir']) throw new UsageError('--data-dir is required');
  if (values['instance-host'] && !values['instance-listen']) {
    throw new UsageError('--instance-host needs --instance-listen');
  }
  if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) {
    throw new UsageError('--tls-cert and --tls-key go together');
  }
  const { serveKms } = await import('./kms-api/serve');
  const { credentialsFromEnv } = await import('./kms-api/server');
  return serveKms({
    ...parseListen(values.listen),
    dataDir: values['data-dir'],
    credentials: credentialsFromEnv(),
    rateLimit:
      values['rate-limit'] === undefined ? 750 : parseRate(values['rate-limit'], '--rate-limit'),
    tlsCertFile: values['tls-cert'],
    tlsKeyFile: values['tls-key'],
    instanceListen: values['instance-listen']
      ? {
          ...parseListen(values['instance-listen'], '--instance-listen'),
          hosts: values['instance-host'],
        }
      : undefined,
    stsTrustFile: values['sts-trust'],
  });
}

async function operator(args: string[]): Promise<Stoppable> {
  const injection = await import('./injection/options');
  const { values } = parseArgs({
    args,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      'kms-listen': { type: 'string' },
      'kms-instance-listen': { type: 'string' },
      'kms-instance-host': { type: 'string', multiple: true },
      'metrics-listen': { type: 'string' },
      'root-key-file': { type: 'string' },
      'rewrap-rate': { type: 'string' },
      workers: { type: 'string' },
      seal: { type: 'string' },
      'seal-key-id': { type: 'string' },
      'seal-endpoint': { type: 'string' },
      'seal-region': { type: 'string' },
      'sts-endpoint': { type: 'string' },
      'seal-previous-context': { type: 'string' },
      'unseal-root-key': { type: 'boolean' },
      // Test-only: how often the seal is checked mid-term, and a failed unseal retried.
      'seal-check-interval': { type: 'string' },
      // Test-only: allow rotation intervals under 7 days.
      'min-rotation-interval': { type: 'string' },
      // Test-only: shorten one day of a deletion window (the 7-day minimum stays).
      'deletion-day': { type: 'string' },
      ...injection.INJECTION_FLAGS,
    },
    strict: true,
  });
  if (values['kms-instance-host'] && !values['kms-instance-listen']) {
    throw new UsageError('--kms-instance-host needs --kms-instance-listen');
  }
  const namespace = values.namespace ?? 'datakey-system';
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) {
    throw new UsageError('--namespace must be a Kubernetes namespace name');
  }
  const seal = sealFromFlags(values);
  if (values['unseal-root-key']) return unsealRootKey(values.kubeconfig, namespace, seal);
  const { startOperator } = await import('./operator/operator');
  const running = await startOperator({
    kubeconfig: values.kubeconfig,
    namespace,
    ...metricsListen(values['metrics-listen'] ?? '0.0.0.0:8080'),
    // The KMS API's modules load only when it is served.
    kmsListen: values['kms-listen']
      ? {
          ...parseListen(values['kms-listen']),
          credentials: (await import('./kms-api/server')).credentialsFromEnv(),
        }
      : undefined,
    kmsInstanceListen: values['kms-instance-listen']
      ? {
          ...parseListen(values['kms-instance-listen'], '--kms-instance-listen'),
          hosts: values['kms-instance-host'],
        }
      : undefined,
    rootKeyFile: values['root-key-file'],
    seal,
    rewrapsPerSecond:
      values['rewrap-rate'] === undefined
        ? undefined
        : parseRate(values['rewrap-rate'], '--rewrap-rate'),
    workers: values.workers === undefined ? undefined : parseWorkers(values.workers),
    minRotationIntervalSeconds: testDuration(
      values['min-rotation-interval'],
      '--min-rotation-interval',
    ),
    deletionDaySeconds: testDuration(values['deletion-day'], '--deletion-day'),
    injection: injectionFromFlags(injection, values, namespace),
  });
  return running;
}

type SealOptions = import('./operator/seal-options').SealOptions;

function sealFromFlags(values: Record<string, unknown>): SealOptions | undefined {
  const flag = (name: string) => values[name] as string | undefined;
  if (flag('seal') === undefined) {
    const stray = ['seal-key-id', 'seal-endpoint', 'seal-region', 'sts-endpoint'].find(flag);
    if (stray || values['unseal-root-key']) {
      throw new UsageError(`--${stray ?? 'unseal-root-key'} needs --seal alicloudkms`);
    }
    return undefined;
  }
  if (flag('seal') !== 'alicloudkms') throw new UsageError('--seal must be alicloudkms');
  for (const name of ['seal-key-id', 'seal-endpoint', 'seal-region']) {
    if (!flag(name)) throw new UsageError(`--seal alicloudkms needs --${name}`);
  }
  if (!/^(alias\/[\w/-]{1,255}|[\w-]{1,128})$/.test(flag('seal-key-id') as string)) {
    throw new UsageError('--seal-key-id must be a key id or alias/NAME');
  }
  for (const name of ['seal-endpoint', 'sts-endpoint']) {
    const value = flag(name);
    if (value !== undefined && !/^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$/.test(value)) {
      throw new UsageError(`--${name} must be HOST[:PORT]`);
    }
  }
  if (!/^[a-z0-9-]{1,64}$/.test(flag('seal-region') as string)) {
    throw new UsageError('--seal-region must be a region id, e.g. cn-hangzhou');
  }
  const interval = testDuration(flag('seal-check-interval'), '--seal-check-interval');
  return {
    keyId: flag('seal-key-id') as string,
    endpoint: flag('seal-endpoint') as string,
    region: flag('seal-region') as string,
    stsEndpoint: flag('sts-endpoint'),
    previousContext: previousContextOf(flag('seal-previous-context')),
    checkIntervalMs: interval === undefined ? undefined : interval * 1000,
    retryMs: interval === undefined ? undefined : interval * 1000,
  };
}

function previousContextOf(value: string | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  const match = /^cluster=([0-9a-f-]{36}),namespace=([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$/.exec(
    value,
  );
  if (!match) {
    throw new UsageError(
      '--seal-previous-context must be cluster=<kube-system UID>,namespace=<NS>',
    );
  }
  return { 'kms.datakey.io/cluster': match[1], 'kms.datakey.io/namespace': match[2] };
}

/** `--unseal-root-key`: back to the embedded default, then exit. */
async function unsealRootKey(
  kubeconfig: string | undefined,
  namespace: string,
  seal: SealOptions | undefined,
): Promise<Stoppable> {
  const { KubeClient } = await import('./runtime/kube-client');
  const { sealedRootKeyOptions } = await import('./operator/seal-options');
  const { unsealInPlace } = await import('./operator/sealed-root-key');
  const client = KubeClient.fromEnvironment(kubeconfig);
  const done = await unsealInPlace(
    await sealedRootKeyOptions(client, namespace, seal as SealOptions),
  );
  process.stdout.write(
    done
      ? `root key of ${namespace} unsealed: start the operator without --seal\n`
      : `root key of ${namespace} is not sealed: nothing to do\n`,
  );
  return { stop: async () => undefined };
}

function injectionFromFlags(
  injection: typeof import('./injection/options'),
  values: Record<string, unknown>,
  namespace: string,
) {
  const listen = (values['webhook-listen'] as string | undefined) ?? '0.0.0.0:9443';
  try {
    const on = listen === 'none' ? undefined : parseListen(listen);
    return injection.injectionOptions(values, on, namespace);
  } catch (err) {
    if (err instanceof injection.FlagError) throw new UsageError(err.message);
    throw err;
  }
}

function metricsListen(value: string): { metricsHost: string; metricsPort: number } {
  const { host, port } = parseListen(value);
  return { metricsHost: host, metricsPort: port };
}

/** Commands a build adds to the product's: the development build adds `dev`. */
export type ExtraCommands = Record<string, (args: string[]) => Promise<Stoppable>>;

async function main(argv: string[], extra: ExtraCommands): Promise<void> {
  const [command, sub, ...rest] = argv;
  let service: Stoppable | undefined;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    // Stopped while starting (e.g. waiting for a seal): nothing was taken on yet.
    if (!service) process.exit(0);
    service.stop().then(
      () => process.exit(0),
      (err: Error) => {
        console.error(`datakey: error while stopping on ${signal}: ${err.message}`);
        process.exit(1);
      },
    );
  };
  // Services stop cleanly on a signal, also while they are still starting.
  if (command !== 'agent') {
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  }
  if (command === 'kms' && sub === 'serve') service = await kmsServe(rest);
  else if (command === 'operator')
    service = await operator(sub === undefined ? [] : [sub, ...rest]);
  else if (command === 'agent') {
    const { runAgent } = await import('./injection/agent');
    process.exitCode = await runAgent(sub === undefined ? [] : [sub, ...rest]);
    return;
  } else if (command !== undefined && Object.hasOwn(extra, command))
    service = await extra[command](sub === undefined ? [] : [sub, ...rest]);
  else if (command === 'dev')
    throw new UsageError(
      'datakey dev is not in this build: it belongs to the development build (npm run dev in a checkout of the repository)',
    );
  else if (command === undefined || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return;
  } else throw new UsageError(`unknown command: ${argv.join(' ')}`);
}

/** Runs `datakey` with the product's commands and those a build adds. */
export function runCli(argv: string[], extra: ExtraCommands = {}): void {
  main(argv, extra).catch((err: Error) => {
    console.error(`datakey: ${err.message}`);
    if (err instanceof UsageError) console.error(`Run 'datakey --help' for usage.`);
    process.exit(err instanceof UsageError ? 2 : 1);
  });
}

if (require.main === module) runCli(process.argv.slice(2));

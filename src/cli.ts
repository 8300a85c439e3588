#!/usr/bin/env node
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { KmsService } from './kms-api/serve';
import { parseRotationInterval } from './kms/validate';
// Each command loads only its own modules: the agent, an init container, starts in a blink.

const USAGE = `Usage: datakey <command> [options]

Commands:
  kms serve --listen HOST:PORT --data-dir DIR [--tls-cert F --tls-key F] [--rate-limit N]
      Serve the Alibaba-compatible KMS API. Credentials of the one account come from
      DATAKEY_ACCESS_KEY_ID and DATAKEY_ACCESS_KEY_SECRET. --rate-limit is calls per
      second per account per operation (default 750, 0 = unlimited).
  operator [--kubeconfig F] [--namespace NS] [--kms-listen HOST:PORT] [--metrics-listen HOST:PORT]
           [--root-key-file F] [--rewrap-rate N]
      Run the MasterKey and DataKey controllers (leader-elected). NS (default
      datakey-system) holds the operator's own state. In-cluster config or
      KUBECONFIG. --kms-listen also serves the KMS API over the embedded core
      (credentials as for kms serve). /metrics, /healthz and /readyz are served on
      --metrics-listen (default 0.0.0.0:8080). After a master key rotates, its
      DataKeys are re-wrapped at --rewrap-rate per second (default 100, 0 = unlimited).
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
  agent --url URL --keys a,b --dir DIR --token-file F [--timeout 2m]
      The init container injected into annotated pods: proves the pod's identity
      with its projected token, fetches the named DataKeys over TLS (CA in
      DATAKEY_AGENT_CA) and writes each, mode 0400, into DIR, which must be a tmpfs.
  dev [--once] [--kms-listen HOST:PORT] [--webhook-listen HOST:PORT]
      The product on its embedded defaults (npm run dev): starts the local control
      plane, installs the CRDs, runs the operator with the KMS API on
      127.0.0.1:18080 (a development credential in ./.datakey-dev/credentials.env),
      applies examples/, waits until they are Ready and prints them. With a node,
      it also builds the operator image, serves pod injection on 0.0.0.0:18443 and
      runs examples/workload/, whose pod gets the orders key in its memory volume.
      --once exits after that; otherwise it runs until Ctrl-C.
`;

class UsageError extends Error {}

interface Stoppable {
  stop(): Promise<void>;
}

function parseListen(value: string | undefined): { host: string; port: number } {
  const match = value ? /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value) : null;
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535)
    throw new UsageError('--listen must be HOST:PORT, e.g. 127.0.0.1:8080');
  return { host: match[1].replace(/^\[|\]$/g, ''), port };
}

function parseRate(value: string, flag: string): number {
  if (!/^\d{1,9}$/.test(value))
    throw new UsageError(`${flag} must be a whole number (0 = unlimited)`);
  return Number(value);
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
    },
    strict: true,
  });
  if (!values['data-dir']) throw new UsageError('--data-dir is required');
  if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) {
    throw new UsageError('--tls-cert and --tls-key go together');
  }
  const { credentialsFromEnv, serveKms } = await import('./kms-api/serve');
  return serveKms({
    ...parseListen(values.listen),
    dataDir: values['data-dir'],
    credentials: credentialsFromEnv(),
    rateLimit:
      values['rate-limit'] === undefined ? 750 : parseRate(values['rate-limit'], '--rate-limit'),
    tlsCertFile: values['tls-cert'],
    tlsKeyFile: values['tls-key'],
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
      'metrics-listen': { type: 'string' },
      'root-key-file': { type: 'string' },
      'rewrap-rate': { type: 'string' },
      // Test-only: allow rotation intervals under 7 days.
      'min-rotation-interval': { type: 'string' },
      ...injection.INJECTION_FLAGS,
    },
    strict: true,
  });
  const namespace = values.namespace ?? 'datakey-system';
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) {
    throw new UsageError('--namespace must be a Kubernetes namespace name');
  }
  const { credentialsFromEnv } = await import('./kms-api/serve');
  const { startOperator } = await import('./operator/operator');
  const running = await startOperator({
    kubeconfig: values.kubeconfig,
    namespace,
    ...metricsListen(values['metrics-listen'] ?? '0.0.0.0:8080'),
    kmsListen: values['kms-listen']
      ? { ...parseListen(values['kms-listen']), credentials: credentialsFromEnv() }
      : undefined,
    rootKeyFile: values['root-key-file'],
    rewrapsPerSecond:
      values['rewrap-rate'] === undefined
        ? undefined
        : parseRate(values['rewrap-rate'], '--rewrap-rate'),
    minRotationIntervalSeconds: values['min-rotation-interval']
      ? parseRotationInterval(values['min-rotation-interval'], 1)
      : undefined,
    injection: injectionFromFlags(injection, values, namespace),
  });
  return running;
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

/** The product's main job on its embedded defaults (npm run dev). */
async function dev(args: string[]): Promise<Stoppable> {
  const { values } = parseArgs({
    args,
    options: {
      once: { type: 'boolean' },
      'kms-listen': { type: 'string' },
      'webhook-listen': { type: 'string' },
    },
    strict: true,
  });
  const { runDev } = await import('./devcluster/dev');
  const session = await runDev({
    once: values.once ?? false,
    root: path.resolve(__dirname, '..'),
    kmsListen: parseListen(values['kms-listen'] ?? '127.0.0.1:18080'),
    webhookListen: parseListen(values['webhook-listen'] ?? '0.0.0.0:18443'),
  });
  if (values.once) {
    await session.operator.stop();
    process.exit(0);
  }
  return session.operator;
}

async function main(argv: string[]): Promise<void> {
  const [command, sub, ...rest] = argv;
  let service: Stoppable;
  if (command === 'kms' && sub === 'serve') service = await kmsServe(rest);
  else if (command === 'operator')
    service = await operator(sub === undefined ? [] : [sub, ...rest]);
  else if (command === 'agent') {
    const { runAgent } = await import('./injection/agent');
    process.exitCode = await runAgent(sub === undefined ? [] : [sub, ...rest]);
    return;
  } else if (command === 'dev') service = await dev(sub === undefined ? [] : [sub, ...rest]);
  else if (command === undefined || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return;
  } else throw new UsageError(`unknown command: ${argv.join(' ')}`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    service.stop().then(
      () => process.exit(0),
      (err: Error) => {
        console.error(`datakey: error while stopping on ${signal}: ${err.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main(process.argv.slice(2)).catch((err: Error) => {
  console.error(`datakey: ${err.message}`);
  if (err instanceof UsageError) console.error(`Run 'datakey --help' for usage.`);
  process.exit(err instanceof UsageError ? 2 : 1);
});

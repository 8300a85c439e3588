import * as path from 'node:path';
import { REPO, kubectl, kubectlOk } from './operator-suite';

/** examples/ (MasterKey payments, DataKeys in shop) and examples/workload/ (orders-reader). */
export const EXAMPLES = path.join(REPO, 'examples');
export const WORKLOAD = path.join(EXAMPLES, 'workload');

/**
 * Applies examples/ and waits until its DataKeys are Ready. A shop namespace
 * still terminating from an earlier suite's removeExamples is waited out first:
 * nothing can be created in it until it is gone.
 */
export async function applyExamplesReady(): Promise<void> {
  await kubectl(['wait', '--for=delete', 'namespace/shop', '--timeout=120s']);
  await kubectlOk(['apply', '-f', EXAMPLES]);
  await kubectlOk([
    'wait',
    '--for=condition=Ready',
    'datakeys',
    '--all',
    '-n',
    'shop',
    '--timeout=120s',
  ]);
}

/** Runs examples/workload/ until rolled out; returns its agent's and app's logs. */
export async function runExampleWorkload(): Promise<{ agent: string; app: string }> {
  await kubectlOk(['apply', '-f', WORKLOAD]);
  await kubectlOk([
    'rollout',
    'status',
    '-n',
    'shop',
    'deployment/orders-reader',
    '--timeout=180s',
  ]);
  const logs = (container: string) =>
    kubectlOk(['logs', '-n', 'shop', 'deployment/orders-reader', '-c', container]);
  return { agent: await logs('datakey-agent'), app: await logs('app') };
}

/** Deletes the workload, the DataKeys, the MasterKey and the shop namespace (checked when `strict`). */
export async function removeExamples(strict = true): Promise<void> {
  const run = strict ? kubectlOk : kubectl;
  await run(['delete', '-f', WORKLOAD, '--wait=true']);
  await run(['delete', 'datakeys', '--all', '-n', 'shop', '--wait=true']);
  await run(['delete', 'masterkey', 'payments', '--wait=true', '--timeout=60s']);
  await run(['delete', 'namespace', 'shop', '--wait=false']);
}

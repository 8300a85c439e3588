#!/usr/bin/env node
// The development build's `datakey`: the product's commands plus `dev`
// (npm run dev), which needs the local cluster and so never ships in the image.
import { parseArgs } from 'node:util';
import { parseListen, runCli, type Stoppable } from '../src/cli';
import { repoRoot } from './devcluster/paths';

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
    root: repoRoot,
    kmsListen: parseListen(values['kms-listen'] ?? '127.0.0.1:18080'),
    webhookListen: parseListen(values['webhook-listen'] ?? '0.0.0.0:18443'),
  });
  if (values.once) {
    await session.operator.stop();
    process.exit(0);
  }
  return session.operator;
}

runCli(process.argv.slice(2), { dev });

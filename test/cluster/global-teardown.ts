import { down } from '../../src/devcluster/cluster';

/** Stops the control plane only if the global setup started it. */
export default async function globalTeardown(): Promise<void> {
  const s = globalThis.__DATAKEY_DEVCLUSTER__;
  if (s?.started && s.stateDir) await down({ stateDir: s.stateDir });
}

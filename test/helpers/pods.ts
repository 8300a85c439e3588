// Small helpers of the tests that run pods on the local node.
import { execFile } from 'node:child_process';
import type { V1Pod } from '@kubernetes/client-node';

/** Runs kubectl (DATAKEY_KUBECTL, set by the cluster setup) and resolves with its stdout. */
export function kubectl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      process.env.DATAKEY_KUBECTL ?? 'kubectl',
      args,
      { timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`kubectl ${args.join(' ')}: ${stderr || err.message}`));
        else resolve(stdout);
      },
    );
  });
}

/** Running with every container ready. */
export function running(pod: V1Pod): boolean {
  return (
    pod.status?.phase === 'Running' &&
    !!pod.status.containerStatuses?.every((c) => c.ready && c.state?.running)
  );
}

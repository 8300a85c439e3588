import { imageBuildUnsupported } from '../../harness/devcluster/image';

/** The Ready node of the test cluster ('' when it has none). */
export const NODE_NAME = process.env.DATAKEY_NODE ?? '';

/**
 * Runs `suite` when the operator image can be built here and imported into the
 * local node; otherwise one test says why: skipped, or failed under CI=true on
 * the local cluster, where it must run.
 */
export function onLocalNodeWithImage(what: string, suite: () => void): void {
  const local = process.env.DATAKEY_LOCAL_CLUSTER === '1';
  const reason = !NODE_NAME
    ? 'the cluster has no Ready node'
    : !local
      ? 'not the local cluster (the image is imported into its containerd)'
      : imageBuildUnsupported();
  if (!reason) {
    suite();
    return;
  }
  if (local && process.env.CI === 'true') {
    test(`${what} (CI=true)`, () => {
      throw new Error(`CI=true and ${what} cannot run: ${reason}`);
    });
  } else test.skip(`${what} (${reason})`, () => undefined);
}

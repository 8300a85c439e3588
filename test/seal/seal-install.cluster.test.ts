// The root of trust installed from the chart on the local node: RRSA (the
// projected token at ACK's path, exchanged at the emulated STS) and the seal
// pointing at a `kms serve` on the host's bridge address. The operator pods
// unseal, the examples become Ready, an injected pod reads its key, and no
// Secret of the release holds a root key in the clear.
import { readFileSync } from 'node:fs';
import { buildAndImport } from '../../harness/devcluster/image';
import { BRIDGE_IP, nodePaths } from '../../harness/devcluster/node';
import { defaultStateDir } from '../../harness/devcluster/paths';
import type { KubeObject } from '../../src/runtime/kube-client';
import {
  CHART,
  HELM_BUILD_TIMEOUT_MS,
  RELEASE,
  RELEASE_NS,
  helmAsync,
  helmBinaries,
} from '../helpers/helm';
import { applyExamplesReady, removeExamples, runExampleWorkload } from '../helpers/examples';
import { onLocalNodeWithImage } from '../helpers/image-on-node';
import { makeTempDir } from '../helpers/kms-process';
import {
  client,
  getOrUndefined,
  kubectl,
  kubectlOk,
  useOperatorSuite,
  type SecretObject,
} from '../helpers/operator-suite';
import { PROVIDER, ROLE, startSealKms, type SealKms } from '../helpers/seal';
import { eventually } from '../helpers/wait';

onLocalNodeWithImage('helm install with RRSA and the seal on the local node', sealInstallSuite);

function sealInstallSuite(): void {
  useOperatorSuite('seal-install');
  let seal: SealKms;

  beforeAll(async () => {
    await helmBinaries();
    await buildAndImport({ address: nodePaths(defaultStateDir()).containerdSock });
    const dir = makeTempDir('datakey-seal-install-');
    seal = await startSealKms(
      dir,
      [`system:serviceaccount:${RELEASE_NS}:datakey-operator`],
      BRIDGE_IP,
    );
    // Another suite's uninstall may still be deleting the release namespace.
    await eventually(`namespace ${RELEASE_NS} gone`, 180_000, async () =>
      (await getOrUndefined(`/api/v1/namespaces/${RELEASE_NS}`)) ? undefined : true,
    );
    await kubectlOk(['create', 'namespace', RELEASE_NS]);
    await kubectlOk([
      'create',
      'secret',
      'generic',
      'seal-ca',
      '-n',
      RELEASE_NS,
      `--from-literal=ca.crt=${readFileSync(seal.certFile, 'utf8')}`,
    ]);
  }, HELM_BUILD_TIMEOUT_MS);

  afterAll(async () => {
    await removeExamples(false);
    await helmAsync('helm', ['uninstall', RELEASE, '-n', RELEASE_NS, '--wait', '--timeout', '2m']);
    await kubectl(['delete', 'namespace', RELEASE_NS, '--wait=false']);
    await seal?.kms.stop();
    // The chart install suite installs into the same namespace next: leave it gone.
    await eventually(`namespace ${RELEASE_NS} gone`, 180_000, async () =>
      (await getOrUndefined(`/api/v1/namespaces/${RELEASE_NS}`)) ? undefined : true,
    );
  }, 300_000);

  test('the operator unseals with its own identity; the examples are Ready; an injected pod reads its key', async () => {
    const r = await helmAsync('helm', [
      'install',
      RELEASE,
      CHART,
      '-n',
      RELEASE_NS,
      '--set',
      'image.tag=dev',
      '--set',
      `seal.alicloudkms.keyId=${seal.sealKeyId},seal.alicloudkms.endpoint=${seal.endpoint()}`,
      '--set',
      'seal.alicloudkms.region=cn-hangzhou,seal.alicloudkms.caSecret=seal-ca',
      '--set',
      `rrsa.roleArn=${ROLE},rrsa.oidcProviderArn=${PROVIDER},rrsa.stsEndpoint=${seal.endpoint()}`,
      '--wait',
      '--timeout',
      '5m',
    ]);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const rootSecret = await client.get<SecretObject>(
      `/api/v1/namespaces/${RELEASE_NS}/secrets/datakey-root-key`,
    );
    expect(Object.keys(rootSecret.data ?? {})).toEqual(['sealedRootKey']);
    expect(
      seal.kms.stdoutLines.some(
        (l) => l.includes('"action":"AssumeRoleWithOIDC"') && l.includes('"status":200'),
      ),
    ).toBe(true);

    await applyExamplesReady();
    const { app } = await runExampleWorkload();
    expect(app).toContain('key /var/run/datakey/orders: 32 bytes, mode 400, uid 1000');

    // No Secret of the release's namespace holds a root key in the clear, and the
    // release carries no static credential.
    const secrets = await client.list<SecretObject>(`/api/v1/namespaces/${RELEASE_NS}/secrets`);
    expect(secrets.items.filter((s) => s.data?.rootKey)).toEqual([]);
    const deployment = await client.get<KubeObject & { spec: unknown }>(
      `/apis/apps/v1/namespaces/${RELEASE_NS}/deployments/${RELEASE}`,
    );
    expect(JSON.stringify(deployment.spec)).not.toMatch(/ACCESS_KEY/);
  });
}

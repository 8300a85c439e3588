import * as path from 'node:path';
import { createCA, createLeaf } from '../../harness/devcluster/pki';
import { makeTempDir, startKms, type KmsProcess } from '../helpers/kms-process';
import { SDK_SUITES, runSuite, type Target } from './sdk-suites';

/**
 * Every official Alibaba KMS SDK generation, at its default settings, against
 * `datakey kms serve` over HTTP and over HTTPS (trusting a test CA). Each SDK
 * suite (tools/sdk-tests/) is one process running all its cases against both
 * servers; this checks its structured results. The first run on a machine
 * installs the SDKs from PyPI, the Go module proxy and Maven Central.
 */

const PREPARE_TIMEOUT_MS = 9 * 60_000;
const SUITE_TIMEOUT_MS = 5 * 60_000;

describe('official SDKs against `datakey kms serve`', () => {
  let http: KmsProcess;
  let https: KmsProcess;
  let targets: Target[];
  const commands = new Map<string, string[]>();
  const accessKeyId = 'sdk-suite-ak';
  const accessKeySecret = 'sdk-suite-secret-0123456789';

  beforeAll(async () => {
    const dir = makeTempDir('datakey-sdk-tls-');
    const ca = createCA(dir, 'ca', 'datakey sdk-suite test CA');
    const leaf = createLeaf(dir, 'server', ca, {
      commonName: '127.0.0.1',
      altNames: ['IP:127.0.0.1'],
      usage: 'server',
    });
    const credentials = { accessKeyId, accessKeySecret };
    [http, https] = await Promise.all([
      startKms(credentials),
      startKms({ ...credentials, args: ['--tls-cert', leaf.cert, '--tls-key', leaf.key] }),
    ]);
    targets = [
      { name: 'http', endpoint: `127.0.0.1:${http.port}`, protocol: 'http', ca: null },
      {
        name: 'https',
        endpoint: `127.0.0.1:${https.port}`,
        protocol: 'https',
        ca: path.resolve(ca.cert),
      },
    ];
    // Installs overlap: downloads wait on the network while the Go build uses the CPU.
    const prepared = await Promise.all(SDK_SUITES.map((s) => s.prepare()));
    SDK_SUITES.forEach((s, i) => commands.set(s.id, prepared[i]));
  }, PREPARE_TIMEOUT_MS);

  it.each(SDK_SUITES.map((s) => [s.sdk, s] as const))(
    '%s passes every case over HTTP and HTTPS',
    async (_sdk, suite) => {
      const run = await runSuite(commands.get(suite.id) as string[], targets, {
        accessKeyId,
        accessKeySecret,
      });
      const failures = run.results.filter((r) => !r.ok);
      expect(failures).toEqual([]);
      for (const target of ['http', 'https']) {
        const ran = run.results.filter((r) => r.target === target).map((r) => r.case);
        expect({ target, ran }).toEqual({ target, ran: suite.cases });
      }
      expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({
        code: 0,
        stderr: '',
      });
    },
    SUITE_TIMEOUT_MS,
  );

  it('answered no request with a 5xx', () => {
    for (const server of [http, https]) {
      const statuses = server.stdoutLines
        .map((line) => JSON.parse(line) as { msg?: string; status?: number })
        .filter((entry) => entry.msg === 'kms request')
        .map((entry) => entry.status ?? 0);
      expect(statuses.length).toBeGreaterThan(100);
      expect(statuses.filter((s) => s >= 500)).toEqual([]);
    }
  });
});

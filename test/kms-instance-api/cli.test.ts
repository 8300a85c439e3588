import { openApiClient } from '../helpers/instance-provisioning';
import { makeTempDir, runCli, startKms } from '../helpers/kms-process';

/** The Instance API flags of `kms serve` and `operator`, and what changes without them. */

const env = {
  PATH: process.env.PATH,
  DATAKEY_ACCESS_KEY_ID: 'ak',
  DATAKEY_ACCESS_KEY_SECRET: 'sk',
};

test.each([
  [
    ['kms', 'serve', '--listen', '127.0.0.1:0', '--data-dir', 'X', '--instance-host', 'a'],
    '--instance-host needs --instance-listen',
  ],
  [
    ['kms', 'serve', '--listen', '127.0.0.1:0', '--data-dir', 'X', '--instance-listen', 'nope'],
    '--instance-listen must be HOST:PORT',
  ],
  [['operator', '--kms-instance-host', 'a'], '--kms-instance-host needs --kms-instance-listen'],
  [['operator', '--kms-instance-listen', '1.2.3.4'], '--kms-instance-listen must be HOST:PORT'],
])('%j is a usage error naming the flag', async (args, message) => {
  const dir = makeTempDir();
  const r = await runCli(
    args.map((a) => (a === 'X' ? dir : a)),
    env,
  );
  expect({ code: r.code, named: r.stderr.includes(message) }).toEqual({ code: 2, named: true });
});

test('without --instance-listen there is no KMS instance', async () => {
  const server = await startKms();
  const call = openApiClient(server);
  const list = await call('ListKmsInstances');
  expect(list.KmsInstances.KmsInstance).toEqual([]);
  expect(list.TotalCount).toBe(0);
  const err = (await call('CreateNetworkRule', { Name: 'r' }).catch((e: unknown) => e)) as {
    code: string;
    message: string;
  };
  expect(err.code).toBe('Forbidden.ResourceNotFound');
  expect(err.message).toContain('--instance-listen');
  expect(server.instanceUrl).toBeUndefined();
  await server.stop();
});

import autocannon from 'autocannon';
import { RequestSigner } from './signed-request';

/**
 * Load generator, run as a child process so autocannon never shares an event loop
 * with a server under test. Reads its job from argv[2] (JSON), runs autocannon and
 * sends the result back over IPC.
 *
 * Both the KMS run and the bare run build a freshly signed request per call, so the
 * client costs the same CPU in both and the ratio reflects the servers alone.
 */
export interface LoadJob {
  url: string;
  connections: number;
  seconds: number;
  action: string;
  params: Record<string, string>;
  accessKeyId: string;
  accessKeySecret: string;
  scheme: 'v1' | 'ACS3';
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2] ?? '') as LoadJob;
  const signer = new RequestSigner(job.accessKeyId, job.accessKeySecret);
  const result = await autocannon({
    url: job.url,
    connections: job.connections,
    pipelining: 1,
    duration: job.seconds,
    timeout: 10,
    requests: [
      {
        setupRequest: (req) => ({
          ...req,
          ...signer.call(job.scheme, new URL(job.url).host, job.action, job.params),
        }),
      },
    ],
  });
  await new Promise<void>((resolve, reject) =>
    (process.send as NonNullable<typeof process.send>)(result, (err: Error | null) =>
      err ? reject(err) : resolve(),
    ),
  );
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`load worker: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);

import autocannon from 'autocannon';
import { RequestSigner } from './signed-request';
import { runWorker } from './worker-process';

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

async function main(): Promise<autocannon.Result> {
  const job = JSON.parse(process.argv[2] ?? '') as LoadJob;
  const signer = new RequestSigner(job.accessKeyId, job.accessKeySecret);
  return autocannon({
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
}

runWorker('load worker', main);

import * as http from 'node:http';
import { componentProcess, restartComponent } from '../../src/devcluster/cluster';
import { defaultStateDir } from '../../src/devcluster/paths';
import { localEtcdEndpoint } from './leak-scan';
import { sleep } from './wait';

/**
 * Faults of the local control plane this test run started (its state folder
 * names the processes; each is checked to be the binary recorded there before
 * it is signalled, so another work tree's cluster is never touched).
 */

export type Component = 'etcd' | 'kube-apiserver';

/** SIGSTOP, wait, SIGCONT (also when the wait is interrupted). */
export async function freeze(component: Component, ms: number): Promise<void> {
  const { pid } = componentProcess(defaultStateDir(), component);
  process.kill(pid, 'SIGSTOP');
  try {
    await sleep(ms);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

/** kill -9 and start again with the same flags (or edited ones); resolves once it serves. */
export function killAndRestart(
  component: Component,
  editArgs?: (args: string[]) => string[],
): Promise<void> {
  return restartComponent(defaultStateDir(), component, editArgs);
}

function etcdPost(path: string, body: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${localEtcdEndpoint()}${path}`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, timeout: 30_000 },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () =>
          res.statusCode === 200
            ? resolve(JSON.parse(text) as Record<string, unknown>)
            : reject(new Error(`etcd ${path}: ${res.statusCode} ${text}`)),
        );
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/** Compacts etcd's history up to its current revision: older watches get 410 Gone. */
export async function compactEtcd(): Promise<number> {
  const range = await etcdPost('/v3/kv/range', { key: Buffer.from('/').toString('base64') });
  const revision = Number((range.header as { revision: string }).revision);
  await etcdPost('/v3/kv/compaction', { revision: String(revision), physical: true });
  return revision;
}

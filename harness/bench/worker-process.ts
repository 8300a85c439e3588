import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * Runs a load worker's `main` (a child process forked by a bench): sends its
 * result to the parent over IPC and exits, or prints the error and exits 1.
 */
export function runWorker<T>(name: string, main: () => Promise<T>): void {
  main()
    .then(
      (result) =>
        new Promise<void>((resolve, reject) =>
          (process.send as NonNullable<typeof process.send>)(result, (err: Error | null) =>
            err ? reject(err) : resolve(),
          ),
        ),
    )
    .then(
      () => process.exit(0),
      (err: Error) => {
        console.error(`${name}: ${err.stack ?? err.message}`);
        process.exit(1);
      },
    );
}

/**
 * The RSA key (PEM) of a client key's PKCS#12, read with openssl as any client
 * that is not an instance SDK would (benchmarks and tests).
 */
export function privateKeyPemOfPkcs12(pkcs12: Buffer, password: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'datakey-p12-'));
  try {
    const file = path.join(dir, 'client.p12');
    writeFileSync(file, pkcs12, { mode: 0o600 });
    return execFileSync('openssl', [
      'pkcs12',
      '-in',
      file,
      '-nocerts',
      '-nodes',
      '-passin',
      `pass:${password}`,
    ]).toString();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

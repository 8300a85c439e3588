import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A key pair on disk: PEM certificate and PEM private key. */
export interface CertFiles {
  cert: string;
  key: string;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() || e.message}`);
  }
}

function ecKey(file: string, dir: string): void {
  openssl(
    ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file],
    dir,
  );
  fs.chmodSync(path.join(dir, file), 0o600);
}

/** Creates a self-signed CA `<name>.crt`/`<name>.key` in dir. */
export function createCA(dir: string, name: string, commonName: string): CertFiles {
  fs.mkdirSync(dir, { recursive: true });
  ecKey(`${name}.key`, dir);
  openssl(
    [
      'req',
      '-x509',
      '-new',
      '-key',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '3650',
      '-subj',
      `/CN=${commonName}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
    ],
    dir,
  );
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

export interface LeafOptions {
  commonName: string;
  organizations?: string[];
  /** e.g. ['IP:127.0.0.1', 'DNS:localhost'] */
  altNames?: string[];
  usage: 'server' | 'client';
}

/** Creates `<name>.crt`/`<name>.key` in dir, signed by the CA. */
export function createLeaf(dir: string, name: string, ca: CertFiles, o: LeafOptions): CertFiles {
  fs.mkdirSync(dir, { recursive: true });
  ecKey(`${name}.key`, dir);
  const subj = (o.organizations ?? []).map((org) => `/O=${org}`).join('') + `/CN=${o.commonName}`;
  openssl(['req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', subj], dir);
  const ext = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${o.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
  ];
  if (o.altNames && o.altNames.length > 0) ext.push(`subjectAltName=${o.altNames.join(',')}`);
  fs.writeFileSync(path.join(dir, `${name}.ext`), ext.join('\n') + '\n');
  openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '825',
      '-extfile',
      `${name}.ext`,
    ],
    dir,
  );
  fs.rmSync(path.join(dir, `${name}.csr`));
  fs.rmSync(path.join(dir, `${name}.ext`));
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

/** RSA key pair for signing service-account tokens: `<name>.key` and `<name>.pub`. */
export function createSigningKey(dir: string, name: string): { key: string; pub: string } {
  fs.mkdirSync(dir, { recursive: true });
  openssl(
    ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', `${name}.key`],
    dir,
  );
  fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
  openssl(['pkey', '-in', `${name}.key`, '-pubout', '-out', `${name}.pub`], dir);
  return { key: path.join(dir, `${name}.key`), pub: path.join(dir, `${name}.pub`) };
}

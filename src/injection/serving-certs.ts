import * as crypto from 'node:crypto';
import * as net from 'node:net';
import type { Logger } from '../common/logger';
import { secretsPath } from '../api/paths';
import { isConflict, isNotFound, type KubeClient, type KubeObject } from '../runtime/kube-client';
import { issueCertificate, newKeyPair } from '../common/x509';

/**
 * The CA and serving certificate of the webhook and delivery endpoint. They
 * live in one Secret of the operator's namespace so every replica serves the
 * same certificate; any replica renews them (a resourceVersion precondition
 * makes one writer win) and every replica picks the renewal up without a restart.
 */

export interface ServingMaterial {
  /** PEM bundle the clients trust: the current CA, plus the previous one while it is valid. */
  caBundle: string;
  cert: string;
  key: string;
  caCert: string;
  caKey: string;
}

export interface CertPolicy {
  /** DNS names and IPs the serving certificate covers. */
  hosts: string[];
  servingValidityMs: number;
  caValidityMs: number;
}

type TlsSecret = KubeObject & { data?: Record<string, string> };

const CA_NAME = 'datakey-operator-webhook-ca';
// Certificates start slightly in the past so a clock a little behind still accepts them.
const BACKDATE_MS = 5 * 60_000;

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8');

function materialOf(secret: TlsSecret): ServingMaterial | undefined {
  const d = secret.data ?? {};
  const m = {
    caBundle: unb64(d['ca.crt']),
    cert: unb64(d['tls.crt']),
    key: unb64(d['tls.key']),
    caCert: unb64(d['ca-current.crt']),
    caKey: unb64(d['ca.key']),
  };
  return Object.values(m).every((v) => v.length > 0) ? m : undefined;
}

function secretData(m: ServingMaterial): Record<string, string> {
  return {
    'ca.crt': b64(m.caBundle),
    'tls.crt': b64(m.cert),
    'tls.key': b64(m.key),
    'ca-current.crt': b64(m.caCert),
    'ca.key': b64(m.caKey),
  };
}

/** True once less than a third of the certificate's lifetime is left. */
export function renewalDue(pem: string, now = Date.now()): boolean {
  const cert = new crypto.X509Certificate(pem);
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  return now >= to - (to - from) / 3;
}

function coversHosts(pem: string, hosts: string[]): boolean {
  const cert = new crypto.X509Certificate(pem);
  return hosts.every((h) =>
    net.isIP(h)
      ? cert.checkIP(h) !== undefined
      : cert.checkHost(h, { wildcards: false }) !== undefined,
  );
}

function newCA(
  policy: CertPolicy,
  previousCA?: string,
): Pick<ServingMaterial, 'caCert' | 'caKey' | 'caBundle'> {
  const keys = newKeyPair();
  const now = Date.now();
  const caCert = issueCertificate(
    {
      commonName: CA_NAME,
      publicKey: keys.publicKey,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + policy.caValidityMs),
      isCA: true,
    },
    { commonName: CA_NAME, ...keys },
  );
  const stillValid = previousCA && !expired(previousCA, now) ? previousCA : '';
  return {
    caCert,
    caKey: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    caBundle: caCert + stillValid,
  };
}

/** A certificate valid for longer than the policy allows (the validity was shortened). */
function outlives(pem: string, policy: CertPolicy, now: number): boolean {
  return (
    Date.parse(new crypto.X509Certificate(pem).validTo) > now + policy.servingValidityMs + 60_000
  );
}

function expired(pem: string, now: number): boolean {
  return Date.parse(new crypto.X509Certificate(pem).validTo) <= now;
}

function issueServing(
  ca: Pick<ServingMaterial, 'caCert' | 'caKey' | 'caBundle'>,
  policy: CertPolicy,
): ServingMaterial {
  const keys = newKeyPair();
  const caKey = crypto.createPrivateKey(ca.caKey);
  const now = Date.now();
  const cert = issueCertificate(
    {
      commonName: policy.hosts[0] ?? 'datakey-operator',
      publicKey: keys.publicKey,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + policy.servingValidityMs),
      isCA: false,
      hosts: policy.hosts,
    },
    { commonName: CA_NAME, privateKey: caKey, publicKey: crypto.createPublicKey(caKey) },
  );
  return { ...ca, cert, key: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

/** What the Secret should hold next, or undefined when it is fine as it is. */
export function nextMaterial(
  current: ServingMaterial | undefined,
  policy: CertPolicy,
  now = Date.now(),
): ServingMaterial | undefined {
  if (!current) return issueServing(newCA(policy), policy);
  if (renewalDue(current.caCert, now)) return issueServing(newCA(policy, current.caCert), policy);
  if (
    renewalDue(current.cert, now) ||
    !coversHosts(current.cert, policy.hosts) ||
    outlives(current.cert, policy, now)
  ) {
    return issueServing(current, policy);
  }
  return undefined;
}

/** Reads the Secret and writes renewed material when due; returns what is current. */
export async function reconcileServingSecret(
  client: KubeClient,
  namespace: string,
  name: string,
  policy: CertPolicy,
  logger: Logger,
): Promise<ServingMaterial> {
  const path = secretsPath(namespace);
  for (;;) {
    let secret: TlsSecret | undefined;
    try {
      secret = await client.get<TlsSecret>(`${path}/${name}`);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const current = secret ? materialOf(secret) : undefined;
    const next = nextMaterial(current, policy);
    if (!next) return current as ServingMaterial;
    try {
      const manifest = {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'kubernetes.io/tls',
        metadata: { name, namespace, resourceVersion: secret?.metadata.resourceVersion },
        data: secretData(next),
      };
      if (secret) await client.replace(`${path}/${name}`, manifest);
      else await client.create(path, manifest);
      logger.info({ secret: name, hosts: policy.hosts }, 'webhook serving certificate issued');
      return next;
    } catch (err) {
      // Another replica wrote first (409 Conflict or AlreadyExists): use what it wrote.
      if (!isConflict(err)) throw err;
    }
  }
}

import {
  X509Certificate,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  randomUUID,
  type KeyObject,
} from 'node:crypto';
import * as net from 'node:net';
import { issueCertificate, newKeyPair } from '../common/x509';
import { formatKmsTime, type Clock } from './clock';
import { KmsError, invalidParameter, missingParameter } from './errors';
import { toPkcs12 } from './pkcs12';
import type { RootKey } from './root-key';
import { checkDescription, paginate, type Page } from './validate';

/**
 * The one KMS instance (KMS 3.0 "dedicated instance") of a core: its CA, and the
 * application access chain of the real service: network rules → policies →
 * application access points → client keys. One record holds all of it, written
 * through the key store like every other record; the CA key is wrapped by the
 * root key and a client key's private key is never kept (it leaves once, in the
 * CreateClientKey answer).
 */

export const KEY_USER_TEMPLATE = 'RbacPermission/Template/CryptoServiceKeyUser';
const SECRET_USER_TEMPLATE = 'RbacPermission/Template/CryptoServiceSecretUser';
const CA_WRAP_VERSION = 'instance-ca';
const CA_VALIDITY_MS = 20 * 365 * 86_400_000;
const SERVER_CERT_VALIDITY_MS = 365 * 86_400_000;
const CLIENT_KEY_DEFAULT_MS = 5 * 365 * 86_400_000;
const MAX_POLICIES_PER_AAP = 3;
const MAX_LIST_ITEMS = 64;
const NAME = /^[A-Za-z0-9_.\-/]{1,64}$/;
const CLIENT_KEY_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

export interface StoredNetworkRule {
  name: string;
  type: 'Private';
  sourcePrivateIp: string[];
  description: string;
  creationDate: string;
}
export interface StoredPolicy {
  name: string;
  permissions: string[];
  resources: string[];
  kmsInstance: string;
  networkRules: string[];
  description: string;
  creationDate: string;
}
export interface StoredApplicationAccessPoint {
  name: string;
  authenticationMethod: 'ClientKey';
  policies: string[];
  description: string;
  creationDate: string;
}
export interface StoredClientKey {
  clientKeyId: string;
  aapName: string;
  /** The certificate in the client's PKCS#12; its public key verifies request signatures. */
  certificatePem: string;
  notBefore: string;
  notAfter: string;
  creationDate: string;
}
export interface StoredInstance {
  instanceId: string;
  creationDate: string;
  caCertificatePem: string;
  /** The CA's PKCS#8 key wrapped by the root key. */
  wrappedCaKey: string;
  networkRules: StoredNetworkRule[];
  policies: StoredPolicy[];
  applicationAccessPoints: StoredApplicationAccessPoint[];
  clientKeys: StoredClientKey[];
}

export interface CreatedClientKey {
  clientKey: StoredClientKey;
  keyAlgorithm: 'RSA_2048';
  /** PKCS#12 (3DES bags, SHA-1 MAC) holding the RSA key and its certificate. */
  privateKeyData: Buffer;
}

export interface ClientKeyCheck {
  clientKey: StoredClientKey;
  publicKey: KeyObject;
}

export const notFound = (kind: string, name: string): KmsError =>
  new KmsError(404, `Forbidden.ResourceNotFound`, `The ${kind} ${name} is not found.`);

const inUse = (kind: string, name: string, by: string): KmsError =>
  new KmsError(409, 'Forbidden.ResourceInUse', `The ${kind} ${name} is still used by ${by}.`);

const exists = (kind: string, name: string): KmsError =>
  new KmsError(409, 'Forbidden.ResourceExists', `The ${kind} ${name} already exists.`);

/** Instance ids look like the service's: `kst-` and 21 lower-case letters and digits. */
function randomId(prefix: string): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(21);
  return prefix + [...bytes].map((b) => alphabet[b % alphabet.length]).join('');
}
export const newInstanceKeyId = (): string => randomId('key-');

export function newInstance(rootKey: RootKey, now: Date): StoredInstance {
  const instanceId = randomId('kst-');
  const ca = newKeyPair();
  const caCertificatePem = issueCertificate(
    {
      commonName: `datakey KMS instance ${instanceId} CA`,
      publicKey: ca.publicKey,
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + CA_VALIDITY_MS),
      isCA: true,
    },
    { commonName: `datakey KMS instance ${instanceId} CA`, ...ca },
  );
  const pkcs8 = ca.privateKey.export({ type: 'pkcs8', format: 'der' });
  try {
    return {
      instanceId,
      creationDate: formatKmsTime(now),
      caCertificatePem,
      wrappedCaKey: rootKey.wrap(pkcs8, instanceId, CA_WRAP_VERSION),
      networkRules: [],
      policies: [],
      applicationAccessPoints: [],
      clientKeys: [],
    };
  } finally {
    pkcs8.fill(0);
  }
}

type Mutate = <T>(change: (draft: StoredInstance) => T) => Promise<T>;

/** Reads and changes one instance record; every change goes through `mutate` (durable first). */
export class KmsInstance {
  private readonly caKey: KeyObject;
  private readonly caPublicKey: KeyObject;
  private readonly clientKeyCache = new Map<string, KeyObject>();

  constructor(
    private doc: StoredInstance,
    rootKey: RootKey,
    private readonly clock: Clock,
    private readonly mutate: Mutate,
  ) {
    const material = rootKey.unwrap(doc.wrappedCaKey, doc.instanceId, CA_WRAP_VERSION);
    try {
      this.caKey = createPrivateKey({ key: material, format: 'der', type: 'pkcs8' });
    } finally {
      material.fill(0);
    }
    this.caPublicKey = new X509Certificate(doc.caCertificatePem).publicKey;
  }

  get id(): string {
    return this.doc.instanceId;
  }
  get record(): StoredInstance {
    return this.doc;
  }
  /** Called by the core after a durable write or a reload. */
  replace(doc: StoredInstance): void {
    this.doc = doc;
  }

  /** A fresh TLS certificate for the Instance API endpoint, signed by the instance CA. */
  issueServerCertificate(hosts: string[]): { cert: string; key: string } {
    const keys = newKeyPair();
    const now = this.clock.now().getTime();
    const cert = issueCertificate(
      {
        commonName: `${this.id}.cryptoservice.kms.aliyuncs.com`,
        publicKey: keys.publicKey,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + SERVER_CERT_VALIDITY_MS),
        isCA: false,
        hosts: [`${this.id}.cryptoservice.kms.aliyuncs.com`, ...hosts],
      },
      this.issuer(),
    );
    return { cert, key: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
  }

  private issuer() {
    return {
      commonName: `datakey KMS instance ${this.id} CA`,
      privateKey: this.caKey,
      publicKey: this.caPublicKey,
    };
  }

  // ---- network rules -------------------------------------------------------

  createNetworkRule(input: {
    name: string;
    type?: string;
    sourcePrivateIp?: string;
    description?: string;
  }): Promise<StoredNetworkRule> {
    checkName('Name', input.name);
    if ((input.type ?? 'Private') !== 'Private') {
      throw invalidParameter('Type', 'Only Private is supported.');
    }
    const rule: StoredNetworkRule = {
      name: input.name,
      type: 'Private',
      sourcePrivateIp: jsonStrings('SourcePrivateIp', input.sourcePrivateIp ?? '[]').map((ip) =>
        checkIpOrCidr('SourcePrivateIp', ip),
      ),
      description: checkDescription(input.description ?? ''),
      creationDate: this.nowIso(),
    };
    return this.mutate((draft) => {
      if (draft.networkRules.some((r) => r.name === rule.name)) {
        throw exists('network rule', rule.name);
      }
      draft.networkRules.push(rule);
      return rule;
    });
  }

  networkRule(name: string): StoredNetworkRule {
    return (
      this.doc.networkRules.find((r) => r.name === name) ??
      throwError(notFound('network rule', name))
    );
  }

  listNetworkRules(page: Page) {
    return paginate(this.doc.networkRules, page);
  }

  deleteNetworkRule(name: string): Promise<void> {
    return this.mutate((draft) => {
      this.networkRule(name);
      const user = draft.policies.find((p) => p.networkRules.includes(name));
      if (user) throw inUse('network rule', name, `policy ${user.name}`);
      draft.networkRules = draft.networkRules.filter((r) => r.name !== name);
    });
  }

  // ---- policies -------------------------------------------------------------

  createPolicy(input: {
    name: string;
    permissions: string;
    resources: string;
    kmsInstance?: string;
    accessControlRules?: string;
    description?: string;
  }): Promise<StoredPolicy> {
    checkName('Name', input.name);
    const permissions = jsonStrings('Permissions', input.permissions);
    for (const p of permissions) {
      if (p !== KEY_USER_TEMPLATE && p !== SECRET_USER_TEMPLATE) {
        throw invalidParameter('Permissions', `Unknown permission template ${printable(p)}.`);
      }
    }
    const resources = jsonStrings('Resources', input.resources);
    for (const r of resources) {
      if (!/^(key|secret)\/[A-Za-z0-9_.\-/*]{1,128}$/.test(r)) {
        throw invalidParameter(
          'Resources',
          `Resource ${printable(r)} is not key/... or secret/...`,
        );
      }
    }
    if (input.kmsInstance !== undefined && input.kmsInstance !== this.id) {
      throw invalidParameter('KmsInstance', `The only KMS instance is ${this.id}.`);
    }
    const networkRules = parseAccessControlRules(input.accessControlRules);
    const policy: StoredPolicy = {
      name: input.name,
      permissions,
      resources,
      kmsInstance: this.id,
      networkRules,
      description: checkDescription(input.description ?? ''),
      creationDate: this.nowIso(),
    };
    return this.mutate((draft) => {
      if (draft.policies.some((p) => p.name === policy.name)) throw exists('policy', policy.name);
      for (const rule of networkRules) {
        if (!draft.networkRules.some((r) => r.name === rule)) {
          throw invalidParameter('AccessControlRules', `Network rule ${rule} does not exist.`);
        }
      }
      draft.policies.push(policy);
      return policy;
    });
  }

  policy(name: string): StoredPolicy {
    return this.doc.policies.find((p) => p.name === name) ?? throwError(notFound('policy', name));
  }

  listPolicies(page: Page) {
    return paginate(this.doc.policies, page);
  }

  deletePolicy(name: string): Promise<void> {
    return this.mutate((draft) => {
      this.policy(name);
      const user = draft.applicationAccessPoints.find((a) => a.policies.includes(name));
      if (user) throw inUse('policy', name, `application access point ${user.name}`);
      draft.policies = draft.policies.filter((p) => p.name !== name);
    });
  }

  // ---- application access points ------------------------------------------

  createApplicationAccessPoint(input: {
    name: string;
    policies: string;
    authenticationMethod?: string;
    description?: string;
  }): Promise<StoredApplicationAccessPoint> {
    checkName('Name', input.name);
    if ((input.authenticationMethod ?? 'ClientKey') !== 'ClientKey') {
      throw invalidParameter('AuthenticationMethod', 'Only ClientKey is supported.');
    }
    const policies = jsonStrings('Policies', input.policies);
    if (policies.length < 1 || policies.length > MAX_POLICIES_PER_AAP) {
      throw invalidParameter('Policies', `Give 1 to ${MAX_POLICIES_PER_AAP} policy names.`);
    }
    const aap: StoredApplicationAccessPoint = {
      name: input.name,
      authenticationMethod: 'ClientKey',
      policies,
      description: checkDescription(input.description ?? ''),
      creationDate: this.nowIso(),
    };
    return this.mutate((draft) => {
      if (draft.applicationAccessPoints.some((a) => a.name === aap.name)) {
        throw exists('application access point', aap.name);
      }
      for (const name of policies) {
        if (!draft.policies.some((p) => p.name === name)) {
          throw invalidParameter('Policies', `Policy ${name} does not exist.`);
        }
      }
      draft.applicationAccessPoints.push(aap);
      return aap;
    });
  }

  applicationAccessPoint(name: string): StoredApplicationAccessPoint {
    return (
      this.doc.applicationAccessPoints.find((a) => a.name === name) ??
      throwError(notFound('application access point', name))
    );
  }

  listApplicationAccessPoints(page: Page) {
    return paginate(this.doc.applicationAccessPoints, page);
  }

  deleteApplicationAccessPoint(name: string): Promise<void> {
    return this.mutate((draft) => {
      this.applicationAccessPoint(name);
      const user = draft.clientKeys.find((k) => k.aapName === name);
      if (user) throw inUse('application access point', name, `client key ${user.clientKeyId}`);
      draft.applicationAccessPoints = draft.applicationAccessPoints.filter((a) => a.name !== name);
    });
  }

  // ---- client keys ----------------------------------------------------------

  createClientKey(input: {
    aapName: string;
    password: string;
    notBefore?: string;
    notAfter?: string;
  }): Promise<CreatedClientKey> {
    checkPassword(input.password);
    const now = this.clock.now();
    if ((input.notBefore === undefined) !== (input.notAfter === undefined)) {
      throw invalidParameter('NotAfter', 'Give NotBefore and NotAfter together, or neither.');
    }
    const notBefore = input.notBefore ? checkClientKeyTime('NotBefore', input.notBefore) : now;
    const notAfter = input.notAfter
      ? checkClientKeyTime('NotAfter', input.notAfter)
      : new Date(now.getTime() + CLIENT_KEY_DEFAULT_MS);
    if (notAfter.getTime() <= notBefore.getTime()) {
      throw invalidParameter('NotAfter', 'It must be later than NotBefore.');
    }
    this.applicationAccessPoint(input.aapName);
    const clientKeyId = `KAAP.${randomUUID()}`;
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const certificatePem = issueCertificate(
      {
        commonName: clientKeyId,
        publicKey,
        notBefore,
        notAfter,
        isCA: false,
        usage: 'client',
      },
      this.issuer(),
    );
    const clientKey: StoredClientKey = {
      clientKeyId,
      aapName: input.aapName,
      certificatePem,
      notBefore: formatKmsTime(notBefore),
      notAfter: formatKmsTime(notAfter),
      creationDate: formatKmsTime(now),
    };
    const der = new X509Certificate(certificatePem).raw;
    const privateKeyData = toPkcs12(privateKey, der, input.password, clientKeyId);
    return this.mutate((draft) => {
      if (!draft.applicationAccessPoints.some((a) => a.name === input.aapName)) {
        throw notFound('application access point', input.aapName);
      }
      draft.clientKeys.push(clientKey);
      return { clientKey, keyAlgorithm: 'RSA_2048' as const, privateKeyData };
    });
  }

  clientKey(clientKeyId: string): StoredClientKey {
    return (
      this.doc.clientKeys.find((k) => k.clientKeyId === clientKeyId) ??
      throwError(notFound('client key', clientKeyId))
    );
  }

  listClientKeys(aapName: string | undefined, page: Page) {
    return paginate(
      this.doc.clientKeys.filter((k) => aapName === undefined || k.aapName === aapName),
      page,
    );
  }

  deleteClientKey(clientKeyId: string): Promise<void> {
    return this.mutate((draft) => {
      this.clientKey(clientKeyId);
      draft.clientKeys = draft.clientKeys.filter((k) => k.clientKeyId !== clientKeyId);
      this.clientKeyCache.delete(clientKeyId);
    });
  }

  /** The client key a request names, if it exists; its public key is parsed once. */
  findClientKey(clientKeyId: string): ClientKeyCheck | undefined {
    const clientKey = this.doc.clientKeys.find((k) => k.clientKeyId === clientKeyId);
    if (!clientKey) return undefined;
    let publicKey = this.clientKeyCache.get(clientKeyId);
    if (!publicKey) {
      publicKey = new X509Certificate(clientKey.certificatePem).publicKey;
      this.clientKeyCache.set(clientKeyId, publicKey);
    }
    return { clientKey, publicKey };
  }

  /**
   * Whether the client key's access point has a policy that grants the key-user
   * template on `resource` (`key/<id>`, or undefined for key-less calls such as
   * GenerateRandom) to a caller at `address`. Returns the reason for a refusal.
   */
  refusal(
    clientKey: StoredClientKey,
    resource: string | undefined,
    address: string,
  ): 'policy' | 'network' | undefined {
    const aap = this.doc.applicationAccessPoints.find((a) => a.name === clientKey.aapName);
    const policies = (aap?.policies ?? [])
      .map((name) => this.doc.policies.find((p) => p.name === name))
      .filter((p): p is StoredPolicy => p !== undefined)
      .filter((p) => p.permissions.includes(KEY_USER_TEMPLATE))
      .filter((p) => resource === undefined || p.resources.some((r) => covers(r, resource)));
    if (policies.length === 0) return 'policy';
    const reachable = policies.some((p) =>
      p.networkRules.some((name) =>
        this.doc.networkRules
          .find((r) => r.name === name)
          ?.sourcePrivateIp.some((range) => addressIn(address, range)),
      ),
    );
    return reachable ? undefined : 'network';
  }

  listInstances(page: Page) {
    return paginate([this.doc], page);
  }

  private nowIso(): string {
    return formatKmsTime(this.clock.now());
  }
}

function covers(pattern: string, resource: string): boolean {
  return pattern.endsWith('/*') ? resource.startsWith(pattern.slice(0, -1)) : pattern === resource;
}

/** IPv4/IPv6 address or CIDR membership; `::ffff:a.b.c.d` counts as a.b.c.d. */
export function addressIn(address: string, range: string): boolean {
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address;
  const [base, bits] = range.split('/');
  const family = net.isIPv4(base) ? 'ipv4' : 'ipv6';
  const list = new net.BlockList();
  try {
    if (bits === undefined) list.addAddress(base, family);
    else list.addSubnet(base, Number(bits), family);
    return list.check(plain, net.isIPv4(plain) ? 'ipv4' : 'ipv6');
  } catch {
    return false;
  }
}

function checkIpOrCidr(parameter: string, value: string): string {
  const [base, bits, ...rest] = value.split('/');
  const max = net.isIPv4(base) ? 32 : net.isIPv6(base) ? 128 : -1;
  const ok =
    max > 0 &&
    rest.length === 0 &&
    (bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= max));
  if (!ok) throw invalidParameter(parameter, `${printable(value)} is not an IP address or CIDR.`);
  return value;
}

function checkName(parameter: string, value: string): void {
  if (!value) throw missingParameter(parameter);
  if (!NAME.test(value)) {
    throw invalidParameter(parameter, 'Use 1 to 64 letters, digits, _ . - or /.');
  }
}

/** A JSON array of strings, as the OpenAPI passes lists. */
function jsonStrings(parameter: string, value: string): string[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw invalidParameter(parameter, 'It must be a JSON array of strings.');
  }
  if (
    !Array.isArray(parsed) ||
    parsed.length > MAX_LIST_ITEMS ||
    !parsed.every((v) => typeof v === 'string' && v.length > 0 && v.length <= 256)
  ) {
    throw invalidParameter(parameter, 'It must be a JSON array of strings.');
  }
  return [...new Set(parsed as string[])];
}

function parseAccessControlRules(value: string | undefined): string[] {
  if (value === undefined || value === '') return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    parsed = undefined;
  }
  const rules =
    parsed !== null && typeof parsed === 'object' && Object.hasOwn(parsed, 'NetworkRules')
      ? (parsed as { NetworkRules: unknown }).NetworkRules
      : undefined;
  if (!Array.isArray(rules) || !rules.every((r) => typeof r === 'string')) {
    throw invalidParameter('AccessControlRules', 'It must be {"NetworkRules":["<name>",...]}.');
  }
  return [...new Set(rules as string[])];
}

function checkPassword(password: string): void {
  if (!password) throw missingParameter('Password');
  const classes = [/[0-9]/, /[A-Za-z]/, /[~!@#$%^&*?_-]/].filter((c) => c.test(password)).length;
  if (
    password.length < 8 ||
    password.length > 64 ||
    !/^[0-9A-Za-z~!@#$%^&*?_-]+$/.test(password) ||
    classes < 2
  ) {
    throw invalidParameter(
      'Password',
      'Use 8 to 64 characters from at least two of: digits, letters, ~!@#$%^&*?_-',
    );
  }
}

function checkClientKeyTime(parameter: string, value: string): Date {
  const at = CLIENT_KEY_TIME.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(at)) throw invalidParameter(parameter, 'Use YYYY-MM-DDThh:mm:ssZ.');
  return new Date(at);
}

const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, '?').slice(0, 64);

function throwError(error: Error): never {
  throw error;
}

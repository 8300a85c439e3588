import * as crypto from 'node:crypto';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { nextMaterial, renewalDue, type CertPolicy } from '../../src/injection/serving-certs';
import { mountOf } from '../../src/injection/agent';

const policy: CertPolicy = {
  hosts: ['datakey-operator-webhook.datakey-system.svc', '127.0.0.1'],
  servingValidityMs: 3_600_000,
  caValidityMs: 36_000_000,
};

const x509 = (pem: string) => new crypto.X509Certificate(pem);

describe('serving certificates', () => {
  test('the first material is a CA and a serving certificate it signed, for every host', () => {
    const m = nextMaterial(undefined, policy);
    if (!m) throw new Error('no material');
    const ca = x509(m.caCert);
    const leaf = x509(m.cert);
    expect(ca.ca).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(ca)).toBe(true);
    expect(leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.checkHost('datakey-operator-webhook.datakey-system.svc')).toBeDefined();
    expect(leaf.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(leaf.checkHost('other.example')).toBeUndefined();
    expect(crypto.createPrivateKey(m.key).asymmetricKeyType).toBe('ec');
    expect(nextMaterial(m, policy)).toBeUndefined();
  });

  test('a TLS client trusting only the bundle completes a handshake', async () => {
    const m = nextMaterial(undefined, policy);
    if (!m) throw new Error('no material');
    const server = https.createServer({ cert: m.cert, key: m.key }, (_req, res) => res.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const body = await new Promise<string>((resolve, reject) =>
        https
          .get(`https://127.0.0.1:${port}/`, { ca: m.caBundle }, (res) => {
            res.setEncoding('utf8');
            let text = '';
            res.on('data', (d: string) => (text += d));
            res.on('end', () => resolve(text));
          })
          .on('error', reject),
      );
      expect(body).toBe('ok');
    } finally {
      server.close();
    }
  });

  test('renewal: the serving certificate after two thirds of its life, keeping the CA', () => {
    const m = nextMaterial(undefined, policy);
    if (!m) throw new Error('no material');
    const notAfter = Date.parse(x509(m.cert).validTo);
    expect(renewalDue(m.cert, notAfter - 0.5 * policy.servingValidityMs)).toBe(false);
    expect(renewalDue(m.cert, notAfter - 0.3 * policy.servingValidityMs)).toBe(true);
    const renewed = nextMaterial(m, policy, notAfter - 0.3 * policy.servingValidityMs);
    expect(renewed?.caCert).toBe(m.caCert);
    expect(renewed?.cert).not.toBe(m.cert);
    expect(x509(renewed?.cert as string).checkIssued(x509(m.caCert))).toBe(true);
  });

  test('IPv6 hosts are covered (no reissue loop), a new host reissues under the same CA', () => {
    const v6 = { ...policy, hosts: [...policy.hosts, 'fd00::1'] };
    const first = nextMaterial(undefined, v6);
    expect(nextMaterial(first, v6)).toBeUndefined();
    const m = nextMaterial(undefined, policy);
    const wider = { ...policy, hosts: [...policy.hosts, '10.244.0.1'] };
    const next = nextMaterial(m, wider);
    expect(next?.caCert).toBe(m?.caCert);
    expect(x509(next?.cert as string).checkIP('10.244.0.1')).toBe('10.244.0.1');
  });

  test('CA renewal keeps trusting the old CA in the bundle while it is valid', () => {
    const m = nextMaterial(undefined, policy);
    if (!m) throw new Error('no material');
    const caEnd = Date.parse(x509(m.caCert).validTo);
    const renewed = nextMaterial(m, policy, caEnd - 0.1 * policy.caValidityMs);
    if (!renewed) throw new Error('not renewed');
    expect(renewed.caCert).not.toBe(m.caCert);
    expect(renewed.caBundle).toContain(renewed.caCert);
    expect(renewed.caBundle).toContain(m.caCert);
    expect(x509(renewed.cert).checkIssued(x509(renewed.caCert))).toBe(true);
  });
});

describe('mountOf (the agent refuses anything but a tmpfs)', () => {
  const mounts = [
    'overlay / overlay rw,relatime 0 0',
    'tmpfs /dev tmpfs rw,nosuid 0 0',
    '/dev/sda1 /var/run/datakey ext4 rw 0 0',
    'tmpfs /var/run/datakey tmpfs rw,relatime 0 0',
    '/dev/sda1 /data ext4 rw 0 0',
    'tmpfs /with\\040space tmpfs rw 0 0',
  ].join('\n');

  test.each([
    ['/var/run/datakey', 'tmpfs', '/var/run/datakey'],
    ['/var/run/datakey/sub', 'tmpfs', '/var/run/datakey'],
    ['/data/keys', 'ext4', '/data'],
    ['/datakeys', 'overlay', '/'],
    ['/with space', 'tmpfs', '/with space'],
  ])('%s is on %s', (dir, fsType, mountPoint) => {
    expect(mountOf(dir, mounts)).toEqual({ mountPoint, fsType });
  });
});

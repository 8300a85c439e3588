import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { createLogger } from '../../src/common/logger';
import { DeliveryLimits } from '../../src/injection/delivery-limits';
import type { KubeClient } from '../../src/runtime/kube-client';

// Service-account tokens as the API server signs them (RS256, a kid from its JWKS).
const cluster = generateKeyPairSync('rsa', { modulusLength: 2048 });
const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...cluster.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' };

function token(claims: object, key: KeyObject = cluster.privateKey, kid = 'k1'): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${part({ alg: 'RS256', kid })}.${part(claims)}`;
  return `${signed}.${sign('sha256', Buffer.from(signed), key).toString('base64url')}`;
}
const podToken = (uid: string, expIn = 600) =>
  token({ exp: Math.floor(Date.now() / 1000) + expIn, 'kubernetes.io': { pod: { uid } } });

function fakeClient(jwks: () => unknown) {
  let calls = 0;
  const client = {
    request: async () => {
      calls++;
      return jwks();
    },
  } as unknown as KubeClient;
  return { client, calls: () => calls };
}
const logger = createLogger('test', { level: 'silent' });

test('bad tokens are refused locally, without any API request beyond one JWKS read', async () => {
  const api = fakeClient(() => ({ keys: [jwk] }));
  const limits = new DeliveryLimits(api.client, { perPod: 1, global: 1 }, logger);
  const bad = [
    'not-a-jwt',
    'a.b.c',
    podToken('p', -10), // expired
    token({ exp: Date.now() / 1000 + 600 }, stranger.privateKey), // another signer
    token({ exp: Date.now() / 1000 + 600 }, cluster.privateKey, 'unknown-kid'),
  ];
  for (let i = 0; i < 200; i++) {
    const answer = await limits.admit(bad[i % bad.length]);
    expect(answer).toMatchObject({ ok: false, status: 401 });
  }
  expect(api.calls()).toBe(1);
  // The flood used no budget: a genuine token still passes at once.
  expect(await limits.admit(podToken('legit'))).toEqual({ ok: true });
});

test('per pod, then globally: 429 with a Retry-After in whole seconds', async () => {
  const api = fakeClient(() => ({ keys: [jwk] }));
  const limits = new DeliveryLimits(api.client, { perPod: 2, global: 3 }, logger);
  const a = podToken('pod-a');
  expect(await limits.admit(a)).toEqual({ ok: true });
  expect(await limits.admit(a)).toEqual({ ok: true });
  const third = await limits.admit(a);
  expect(third).toMatchObject({ ok: false, status: 429, retryAfterSeconds: 1 });
  expect((third as { message: string }).message).toContain('this pod');
  expect(await limits.admit(podToken('pod-b'))).toEqual({ ok: true });
  const global = await limits.admit(podToken('pod-c'));
  expect(global).toMatchObject({ ok: false, status: 429 });
  expect((global as { message: string }).message).toContain('all pods together');
});

test('without a JWKS, tokens go on to the TokenReview, still under both limits', async () => {
  const api = fakeClient(() => {
    throw new Error('forbidden');
  });
  const limits = new DeliveryLimits(api.client, { perPod: 1, global: 0 }, logger);
  const forged = token({ exp: Date.now() / 1000 + 600 }, stranger.privateKey);
  expect(await limits.admit(forged)).toEqual({ ok: true });
  expect(await limits.admit(forged)).toMatchObject({ ok: false, status: 429 });
  expect(await limits.admit(podToken('x', -1))).toMatchObject({ ok: false, status: 401 });
});

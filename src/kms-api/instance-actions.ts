import { X509Certificate } from 'node:crypto';
import { KmsError } from '../kms/errors';
import type {
  KmsInstance,
  StoredApplicationAccessPoint,
  StoredClientKey,
  StoredNetworkRule,
  StoredPolicy,
} from '../kms/instance';
import type { ActionContext, ActionResult } from './actions';
import { page, pageFields, type Params } from './params';

/**
 * The OpenAPI actions that provision the KMS instance's application access:
 * network rules → policies → application access points → client keys, plus
 * ListKmsInstances / GetKmsInstance. List-valued fields are JSON strings, as
 * both Go SDKs declare them.
 */

type InstanceAction = (
  params: Params,
  ctx: ActionContext,
  instance: KmsInstance,
) => ActionResult | Promise<ActionResult>;

const arn = (ctx: ActionContext, kind: string, name: string) =>
  `acs:kms:${ctx.regionId}:${ctx.accountId}:${kind}/${name}`;

const networkRule = (ctx: ActionContext, r: StoredNetworkRule) => ({
  Arn: arn(ctx, 'network', r.name),
  Name: r.name,
  Type: r.type,
  SourcePrivateIp: JSON.stringify(r.sourcePrivateIp),
  Description: r.description,
  CreateTime: r.creationDate,
});

const policy = (ctx: ActionContext, p: StoredPolicy) => ({
  Arn: arn(ctx, 'policy', p.name),
  Name: p.name,
  KmsInstance: p.kmsInstance,
  Permissions: JSON.stringify(p.permissions),
  Resources: JSON.stringify(p.resources),
  AccessControlRules: JSON.stringify({ NetworkRules: p.networkRules }),
  Description: p.description,
  CreateTime: p.creationDate,
});

const accessPoint = (ctx: ActionContext, a: StoredApplicationAccessPoint) => ({
  Arn: arn(ctx, 'aap', a.name),
  Name: a.name,
  AuthenticationMethod: a.authenticationMethod,
  Policies: JSON.stringify(a.policies),
  Description: a.description,
  CreateTime: a.creationDate,
});

const clientKey = (k: StoredClientKey) => ({
  ClientKeyId: k.clientKeyId,
  AapName: k.aapName,
  KeyAlgorithm: 'RSA_2048',
  KeyOrigin: 'KMS_GENERATED',
  NotBefore: k.notBefore,
  NotAfter: k.notAfter,
  CreateTime: k.creationDate,
  PublicKeyData: new X509Certificate(k.certificatePem).publicKey.export({
    type: 'spki',
    format: 'pem',
  }),
});

const INSTANCE_ACTIONS: Record<string, InstanceAction> = {
  CreateNetworkRule: async (p, ctx, instance) => {
    const rule = await instance.createNetworkRule({
      name: p.required('Name'),
      type: p.optional('Type') || undefined,
      sourcePrivateIp: p.optional('SourcePrivateIp') || undefined,
      description: p.optional('Description'),
    });
    return { body: networkRule(ctx, rule) };
  },
  DescribeNetworkRule: (p, ctx, instance) => ({
    body: networkRule(ctx, instance.networkRule(p.required('Name'))),
  }),
  ListNetworkRules: (p, _ctx, instance) => {
    const pg = page(p);
    const { items, totalCount } = instance.listNetworkRules(pg);
    return {
      body: {
        NetworkRules: { NetworkRule: items.map((r) => ({ Name: r.name })) },
        ...pageFields(pg, totalCount),
      },
    };
  },
  DeleteNetworkRule: async (p, _ctx, instance) => {
    await instance.deleteNetworkRule(p.required('Name'));
    return { body: {} };
  },

  CreatePolicy: async (p, ctx, instance) => {
    const created = await instance.createPolicy({
      name: p.required('Name'),
      permissions: p.required('Permissions'),
      resources: p.required('Resources'),
      kmsInstance: p.optional('KmsInstance') || undefined,
      accessControlRules: p.optional('AccessControlRules'),
      description: p.optional('Description'),
    });
    return { body: policy(ctx, created) };
  },
  DescribePolicy: (p, ctx, instance) => ({
    body: policy(ctx, instance.policy(p.required('Name'))),
  }),
  ListPolicies: (p, _ctx, instance) => {
    const pg = page(p);
    const { items, totalCount } = instance.listPolicies(pg);
    return {
      body: {
        Policies: { Policy: items.map((x) => ({ Name: x.name })) },
        ...pageFields(pg, totalCount),
      },
    };
  },
  DeletePolicy: async (p, _ctx, instance) => {
    await instance.deletePolicy(p.required('Name'));
    return { body: {} };
  },

  CreateApplicationAccessPoint: async (p, ctx, instance) => {
    const created = await instance.createApplicationAccessPoint({
      name: p.required('Name'),
      policies: p.required('Policies'),
      authenticationMethod: p.optional('AuthenticationMethod') || undefined,
      description: p.optional('Description'),
    });
    return { body: accessPoint(ctx, created) };
  },
  DescribeApplicationAccessPoint: (p, ctx, instance) => ({
    body: accessPoint(ctx, instance.applicationAccessPoint(p.required('Name'))),
  }),
  ListApplicationAccessPoints: (p, _ctx, instance) => {
    const pg = page(p);
    const { items, totalCount } = instance.listApplicationAccessPoints(pg);
    return {
      body: {
        ApplicationAccessPoints: {
          ApplicationAccessPoint: items.map((a) => ({ Name: a.name })),
        },
        ...pageFields(pg, totalCount),
      },
    };
  },
  DeleteApplicationAccessPoint: async (p, _ctx, instance) => {
    await instance.deleteApplicationAccessPoint(p.required('Name'));
    return { body: {} };
  },

  CreateClientKey: async (p, _ctx, instance) => {
    const created = await instance.createClientKey({
      aapName: p.required('AapName'),
      password: p.required('Password'),
      notBefore: p.optional('NotBefore') || undefined,
      notAfter: p.optional('NotAfter') || undefined,
    });
    return {
      body: {
        ClientKeyId: created.clientKey.clientKeyId,
        KeyAlgorithm: created.keyAlgorithm,
        NotBefore: created.clientKey.notBefore,
        NotAfter: created.clientKey.notAfter,
        PrivateKeyData: created.privateKeyData.toString('base64'),
      },
    };
  },
  GetClientKey: (p, _ctx, instance) => ({
    body: clientKey(instance.clientKey(p.required('ClientKeyId'))),
  }),
  ListClientKeys: (p, _ctx, instance) => {
    const pg = page(p);
    const { items, totalCount } = instance.listClientKeys(p.optional('AapName') || undefined, pg);
    return { body: { ClientKeys: items.map(clientKey), ...pageFields(pg, totalCount) } };
  },
  DeleteClientKey: async (p, _ctx, instance) => {
    await instance.deleteClientKey(p.required('ClientKeyId'));
    return { body: {} };
  },

  GetKmsInstance: (p, ctx, instance) => {
    const id = p.required('KmsInstanceId');
    if (id !== instance.id) {
      throw new KmsError(404, 'Forbidden.ResourceNotFound', `The KMS instance ${id} is not found.`);
    }
    const doc = instance.record;
    return {
      body: {
        KmsInstance: {
          InstanceId: doc.instanceId,
          InstanceName: doc.instanceId,
          Status: 'Connected',
          CaCertificateChainPem: doc.caCertificatePem,
          CreateTime: doc.creationDate,
          StartDate: doc.creationDate,
          EndDate: '2099-12-31T23:59:59Z',
          KeyNum: ctx.core.instanceKeyCount(),
          SecretNum: '0',
          Spec: 1000,
          VpcNum: 0,
          ProductType: 'kms_ddi_public_cn',
          ProductVersion: '3',
          ChargeType: 'PREPAID',
        },
      },
    };
  },
};

/** The instance actions; without a KMS instance they answer that there is none. */
export const INSTANCE_ACTION_HANDLERS = Object.fromEntries(
  Object.entries(INSTANCE_ACTIONS).map(([name, action]) => [
    name,
    (p: Params, ctx: ActionContext) => action(p, ctx, requireInstance(ctx)),
  ]),
);

/** Lists the one instance, or none when the server runs without the Instance API. */
export function listKmsInstances(p: Params, ctx: ActionContext): ActionResult {
  const pg = page(p);
  const instance = ctx.core.instance;
  const { items, totalCount } = instance
    ? instance.listInstances(pg)
    : { items: [], totalCount: 0 };
  return {
    body: {
      KmsInstances: {
        KmsInstance: items.map((i) => ({
          KmsInstanceId: i.instanceId,
          KmsInstanceArn: arn(ctx, 'kms-instance', i.instanceId),
        })),
      },
      ...pageFields(pg, totalCount),
    },
  };
}

function requireInstance(ctx: ActionContext): KmsInstance {
  const instance = ctx.core.instance;
  if (!instance) {
    throw new KmsError(
      404,
      'Forbidden.ResourceNotFound',
      'This server has no KMS instance: start it with --instance-listen.',
    );
  }
  return instance;
}

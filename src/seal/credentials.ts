import Credential, {
  OIDCRoleArnCredentialsProvider,
  StaticAKCredentialsProvider,
  StaticSTSCredentialsProvider,
} from '@alicloud/credentials';

/** The RRSA variables ACK's pod identity webhook sets (and the chart sets with rrsa.*). */
export const RRSA_VARIABLES = [
  'ALIBABA_CLOUD_ROLE_ARN',
  'ALIBABA_CLOUD_OIDC_PROVIDER_ARN',
  'ALIBABA_CLOUD_OIDC_TOKEN_FILE',
] as const;

export interface AlibabaCredentials {
  credential: Credential;
  /** `rrsa` (the pod's own identity) or `environment` (static or STS keys). */
  source: 'rrsa' | 'environment';
}

/**
 * Credentials for Alibaba Cloud calls. With the RRSA variables present, the OIDC
 * role provider is built explicitly: the package's default chain would prefer
 * keys in the environment, try the ECS metadata address and then stick to the
 * provider that last answered, even after it fails. It exchanges the projected
 * token at STS (`stsEndpoint`, or the region's from ALIBABA_CLOUD_STS_REGION)
 * and refreshes before expiry. Otherwise static or STS keys from the environment
 * (ALIBABA_CLOUD_ACCESS_KEY_ID, _SECRET, and _SECURITY_TOKEN): the weaker choice,
 * since a long-lived key sits in the process's environment.
 */
export function alibabaCredentials(
  env: NodeJS.ProcessEnv,
  stsEndpoint?: string,
): AlibabaCredentials {
  const rrsa = RRSA_VARIABLES.filter((name) => env[name]);
  if (rrsa.length > 0) {
    const missing = RRSA_VARIABLES.filter((name) => !env[name]);
    if (missing.length > 0) throw new Error(`RRSA is half configured: set ${missing.join(', ')}`);
    const builder = OIDCRoleArnCredentialsProvider.builder()
      .withRoleArn(env.ALIBABA_CLOUD_ROLE_ARN as string)
      .withOIDCProviderArn(env.ALIBABA_CLOUD_OIDC_PROVIDER_ARN as string)
      .withOIDCTokenFilePath(env.ALIBABA_CLOUD_OIDC_TOKEN_FILE as string)
      .withRoleSessionName(env.ALIBABA_CLOUD_ROLE_SESSION_NAME || 'datakey-operator');
    if (stsEndpoint) builder.withStsEndpoint(stsEndpoint);
    return { credential: new Credential(null, builder.build()), source: 'rrsa' };
  }
  const accessKeyId = env.ALIBABA_CLOUD_ACCESS_KEY_ID;
  const accessKeySecret = env.ALIBABA_CLOUD_ACCESS_KEY_SECRET;
  if (!accessKeyId || !accessKeySecret) {
    throw new Error(
      `no Alibaba Cloud credentials: set ${RRSA_VARIABLES.join(', ')} (RRSA) or ` +
        'ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET',
    );
  }
  const token = env.ALIBABA_CLOUD_SECURITY_TOKEN;
  const provider = token
    ? StaticSTSCredentialsProvider.builder()
        .withAccessKeyId(accessKeyId)
        .withAccessKeySecret(accessKeySecret)
        .withSecurityToken(token)
        .build()
    : StaticAKCredentialsProvider.builder()
        .withAccessKeyId(accessKeyId)
        .withAccessKeySecret(accessKeySecret)
        .build();
  return { credential: new Credential(null, provider), source: 'environment' };
}

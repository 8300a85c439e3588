import * as path from 'node:path';
import { createLogger, type Logger } from '../common/logger';
import { KmsCore } from '../kms/core';
import { FileKeyStore, rootKeyFile } from '../kms/file-store';
import { RootKey, loadOrCreateRootKey } from '../kms/root-key';
import {
  startInstanceApi,
  type InstanceListenOptions,
  type RunningInstanceApi,
} from '../kms-instance-api/server';
import { KmsApi, accountIdOf, listen, type Credentials, type RunningServer } from './server';
import { StsService, readStsTrust } from './sts';

export interface ServeOptions {
  host: string;
  port: number;
  dataDir: string;
  credentials: Credentials;
  rateLimit: number;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  rootKeyFile?: string;
  /** Also answer STS AssumeRoleWithOIDC for the providers and roles this file trusts. */
  stsTrustFile?: string;
  logger?: Logger;
  maintenanceIntervalMs?: number;
  /** Also serve the KMS Instance API (TLS, certificate from the instance CA). */
  instanceListen?: InstanceListenOptions;
}

export interface KmsService {
  url: string;
  /** The Instance API's https URL, with --instance-listen. */
  instanceUrl?: string;
  core: KmsCore;
  stop(): Promise<void>;
}

/** Opens the file-backed core in `dataDir` and serves the KMS API over it. */
export async function serveKms(options: ServeOptions): Promise<KmsService> {
  const logger = options.logger ?? createLogger('kms-api');
  const { credentials } = options;
  const sts = options.stsTrustFile
    ? new StsService(
        readStsTrust(options.stsTrustFile),
        credentials.accessKeySecret,
        accountIdOf(credentials.accessKeyId),
      )
    : undefined;
  const store = await FileKeyStore.open(options.dataDir);
  let core: KmsCore | undefined;
  try {
    const rootKeyPath = options.rootKeyFile ?? path.join(options.dataDir, 'root.key');
    const rootKey = new RootKey(await loadOrCreateRootKey(rootKeyFile(rootKeyPath), store));
    core = await KmsCore.open({ store, rootKey });
  } catch (err) {
    await store.close();
    throw err;
  }
  const openedCore = core;
  const api = new KmsApi({
    core: openedCore,
    credentials,
    logger,
    rateLimit: options.rateLimit,
    sts,
  });
  let running: RunningServer;
  let instanceApi: RunningInstanceApi | undefined;
  try {
    running = await listen(api, options);
    if (options.instanceListen) {
      instanceApi = await startInstanceApi(openedCore, options.instanceListen, logger);
    }
  } catch (err) {
    await openedCore.close();
    throw err;
  }
  const maintenance = setInterval(() => {
    openedCore.runMaintenance().then(
      ({ rotated, deleted }) => {
        if (rotated.length || deleted.length) logger.info({ rotated, deleted }, 'key maintenance');
      },
      (err: Error) => logger.error({ err: err.message }, 'key maintenance failed'),
    );
  }, options.maintenanceIntervalMs ?? 10_000);
  maintenance.unref();
  logger.info({ url: running.url, dataDir: path.resolve(options.dataDir) }, 'kms api listening');
  return {
    url: running.url,
    instanceUrl: instanceApi?.url,
    core: openedCore,
    async stop() {
      clearInterval(maintenance);
      await instanceApi?.close();
      await running.close();
      await openedCore.close();
      logger.info('kms api stopped');
    },
  };
}

import { instanceSdkSuite, type SuiteTarget } from '../helpers/instance-sdk-suite';
import { foreignClientKey } from '../helpers/instance-provisioning';
import { startKms, type KmsProcess } from '../helpers/kms-process';

/**
 * `datakey kms serve --instance-listen` with the official instance SDKs (Go
 * github.com/aliyun/alibabacloud-dkms-gcs-go-sdk v0.5.1, Python
 * alibabacloud-dkms-gcs 1.0.2, Java com.aliyun:alibabacloud-dkms-gcs-sdk 0.5.2) at
 * their default settings. A second server's
 * instance supplies the foreign client key.
 */

let server: KmsProcess;
let target: SuiteTarget;

beforeAll(async () => {
  const args = ['--instance-listen', '127.0.0.1:0'];
  const [main, other] = await Promise.all([startKms({ args }), startKms({ args })]);
  server = main;
  target = {
    openApi: server,
    instanceEndpoint: new URL(server.instanceUrl as string).host,
    foreign: await foreignClientKey(other),
  };
  await other.stop();
}, 60_000);

afterAll(() => server?.stop());

instanceSdkSuite('go', () => target);
instanceSdkSuite('python', () => target);
instanceSdkSuite('java', () => target);

// client-node 1.x ships ESM, so it and its ESM-only dependencies are transformed by swc.
const esmPackages = ['@kubernetes/client-node', 'openid-client', 'oauth4webapi', 'jose'].join('|');

const shared = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: {
    '^.+\\.(t|j|mj)s$': ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${esmPackages})/)`],
};

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 30000,
  projects: [
    {
      ...shared,
      displayName: 'unit',
      testMatch: ['<rootDir>/test/**/*.test.ts'],
      testPathIgnorePatterns: [
        '/node_modules/',
        '\\.cluster\\.test\\.ts$',
        '\\.reliability\\.test\\.ts$',
      ],
    },
    {
      ...shared,
      displayName: 'cluster',
      testMatch: ['<rootDir>/test/**/*.cluster.test.ts'],
      // Starts one local control plane per run (building it on first use), or
      // uses the cluster of a KUBECONFIG the caller supplies; exports KUBECONFIG.
      globalSetup: '<rootDir>/test/cluster/global-setup.ts',
      globalTeardown: '<rootDir>/test/cluster/global-teardown.ts',
      // Generous per-test timeout (testTimeout is not a per-project option).
      setupFilesAfterEnv: ['<rootDir>/test/cluster/timeouts.ts'],
    },
  ],
};

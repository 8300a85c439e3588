// client-node 1.x ships ESM, so it and its ESM-only dependencies are transformed by swc.
const esmPackages = ['@kubernetes/client-node', 'openid-client', 'oauth4webapi', 'jose'].join('|');

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.(t|j|mj)s$': ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${esmPackages})/)`],
  testTimeout: 30000,
};

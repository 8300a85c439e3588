// The reliability suite (test/reliability/): faults of the control plane, a
// partitioned leader, damaged key store, hostile input. It runs on a control
// plane of its own (.cluster-reliability, no node) and ends with one JSON line
// of figures. `npm run test:reliability` is the full form (bursts of 300);
// the README's `npm test` runs the short form (each fault once, small bursts).
const { projects } = require('./jest.config.js');
const { transform, transformIgnorePatterns, testEnvironment } = projects[0];

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 30000,
  maxWorkers: 1,
  projects: [
    {
      testEnvironment,
      transform,
      transformIgnorePatterns,
      displayName: 'reliability',
      roots: ['<rootDir>/test'],
      testMatch: ['<rootDir>/test/reliability/**/*.reliability.test.ts'],
      globalSetup: '<rootDir>/test/reliability/global-setup.ts',
      globalTeardown: '<rootDir>/test/reliability/global-teardown.ts',
      setupFilesAfterEnv: ['<rootDir>/test/reliability/timeouts.ts'],
    },
  ],
};

/** @jest-config-loader esbuild-register */
import type { Config } from 'jest';

// ESM mode: openid-client, oauth4webapi, jose and oidc-provider are ESM-only, and jest 30 on Node 20 cannot
// require() them. `npm test` runs jest under `node --experimental-vm-modules`.
const config: Config = {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json' }],
  },
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  setupFiles: ['<rootDir>/test/setup/quiet-provider.ts'],
  globalSetup: '<rootDir>/test/setup/global-setup.ts',
  globalTeardown: '<rootDir>/test/setup/global-teardown.ts',
  reporters: ['default', '<rootDir>/test/setup/summary-reporter.cjs'],
  testTimeout: 30_000,
  maxWorkers: 2,
};

export default config;

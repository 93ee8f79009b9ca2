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
  // A worker that has finished exits on its own (no handle is left open: its 'exit' event fires within a few ms),
  // but V8 then unmaps the worker's whole heap, and in ESM mode that heap keeps every test file's module graph
  // (jest's vm-modules retention, ~3-10 MB per file even for an empty test; jestjs/jest#14605), so by the end of a
  // full run each worker holds 300-500 MB and takes about a second to die. Jest's default 500 ms then kills it
  // and prints "A worker process has failed to exit gracefully". A worker that really hangs is still reported.
  workerGracefulExitTimeout: 5_000,
};

export default config;

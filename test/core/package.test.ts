import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, test } from '@jest/globals';

const run = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

// `npm test` builds dist/ first (pretest); these tests check what a user installs.
describe('the published package', () => {
  beforeAll(() => {
    if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first).');
  });

  test('works with import', async () => {
    const { stdout } = await run(
      process.execPath,
      ['--input-type=module', '-e', "import * as m from 'express-oauth-pkce'; console.log(Object.keys(m).sort().join(','))"],
      { cwd: root },
    );
    expect(stdout.trim()).toBe('AuthError,AuthErrorCode,auth,requireAuth');
  });

  test('works with require (Node >= 20.19)', async () => {
    const { stdout } = await run(
      process.execPath,
      ['-e', "const m = require('express-oauth-pkce'); console.log(typeof m.auth, typeof m.requireAuth, m.AuthErrorCode.LOGIN_REQUIRED)"],
      { cwd: root },
    );
    expect(stdout.trim()).toBe('function function login_required');
  });

  test('blocks deep imports', async () => {
    await expect(run(process.execPath, ['-e', "require('express-oauth-pkce/dist/auth.js')"], { cwd: root })).rejects.toMatchObject({
      stderr: expect.stringContaining('ERR_PACKAGE_PATH_NOT_EXPORTED'),
    });
  });

  test('ships types that give req.auth to a consumer without casts', async () => {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await run(process.execPath, [tsc, '-p', join(root, 'test', 'fixtures', 'consumer', 'tsconfig.json')], { cwd: root }).catch(
      (err: { stdout: string }) => ({ stdout: err.stdout, failed: true }),
    );
    expect(result.stdout).toBe('');
    expect('failed' in result).toBe(false);
  }, 60_000);
});

describe('the tarball', () => {
  test('carries the sources its source maps and declaration maps point at', async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root });
    const [packed] = JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>;
    const shipped = new Set<string>(packed!.files.map((file) => file.path));
    const maps = [...shipped].filter((path) => path.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);
    const missing = maps.flatMap((map) =>
      (JSON.parse(readFileSync(join(root, map), 'utf8')) as { sources: string[] }).sources
        .map((source) => posix.normalize(posix.join(posix.dirname(map), source)))
        .filter((source) => !shipped.has(source)),
    );
    expect(missing).toEqual([]);
  });
});

test('every package the declaration files import is installed with it (a dependency or a required peer)', () => {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
    peerDependencies?: Record<string, string>;
    peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  };
  const installed = new Set([
    ...Object.keys(manifest.dependencies ?? {}),
    ...Object.keys(manifest.peerDependencies ?? {}).filter((name) => manifest.peerDependenciesMeta?.[name]?.optional !== true),
  ]);
  const dist = join(root, 'dist');
  const imported = new Set(
    readdirSync(dist)
      .filter((file) => file.endsWith('.d.ts'))
      .flatMap((file) => [...readFileSync(join(dist, file), 'utf8').matchAll(/^(?:import|export)\b[^;]*?\bfrom '([^'.][^']*)'/gm)].map((m) => m[1]!))
      .filter((specifier) => !specifier.startsWith('node:'))
      .map((specifier) => (specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!)),
  );
  expect(imported.size).toBeGreaterThan(0);
  // A consumer type-checking with skipLibCheck: false fails on any of these that npm did not install (TS2307).
  expect([...imported].filter((name) => !installed.has(name))).toEqual([]);
});

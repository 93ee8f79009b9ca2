import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import {
  getJson,
  installTokenStub,
  lockKey,
  readLogin,
  readRecord,
  refreshErrors,
  refreshGrants,
  spawnAppProcess,
  startRefreshStack,
  tokenKey,
  userinfoStatus,
  waitUntilDue,
  type AppProcess,
  type TokenStub,
} from './support.js';

// App processes besides this one, sharing Redis (sessions, token store, locks) and the provider.
// `first`/`second`: httpTimeout 1000 ms makes the lock lease 4 s (3 × timeout + 1 s), short enough to wait for in a
// test. The storm runs on two processes with the default timeout: on a loaded machine a 1 s timeout can fire while the
// server is rotating the token, and the rotated token is then lost (any client's fate on a cut-off answer), which
// would fail the test for the machine's sake, not the library's.
let stack: Stack;
let stub: TokenStub;
let first: AppProcess;
let second: AppProcess;
let stormA: AppProcess;
let stormB: AppProcess;

beforeAll(async () => {
  stack = await startRefreshStack({ httpTimeout: 1000 });
  stub = installTokenStub(stack.provider);
  [first, second, stormA, stormB] = await Promise.all([
    spawnAppProcess(stack),
    spawnAppProcess(stack),
    spawnAppProcess(stack, { httpTimeout: 5000 }),
    spawnAppProcess(stack, { httpTimeout: 5000 }),
  ]);
}, 90_000);

afterAll(async () => {
  await Promise.all([first, second, stormA, stormB].map((app) => app?.kill('SIGKILL')));
  await stack?.close();
});

async function login(): Promise<Browser> {
  const browser = new Browser();
  // Logged in through this process's app; the session cookie (host 127.0.0.1) goes to the other processes too.
  expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200);
  return browser;
}

test('100 concurrent calls split over two processes sharing Redis cause exactly one refresh grant', async () => {
  const browser = await login();
  const before = await readLogin(stack, browser);
  const grants = refreshGrants(stack.provider);
  const errors = refreshErrors(stack.provider);
  const revoked = stack.provider.count('grant.revoked');
  const posts = stub.posts;
  await waitUntilDue(before.tokens);

  const results = await Promise.all(
    Array.from({ length: 100 }, (_, i) => getJson(browser, `${(i % 2 === 0 ? stormA : stormB).url}/api/token`)),
  );

  expect(results.map((r) => r.status)).toEqual(Array(100).fill(200));
  const tokens = new Set(results.map((r) => r.body.accessToken));
  expect(tokens.size).toBe(1);
  const [fresh] = [...tokens] as string[];
  expect(fresh).not.toBe(before.tokens.accessToken);
  expect(stub.posts - posts).toBe(1);
  expect(refreshGrants(stack.provider) - grants).toBe(1);
  expect(refreshErrors(stack.provider) - errors).toBe(0);
  expect(stack.provider.count('grant.revoked')).toBe(revoked);
  expect(await userinfoStatus(stack.provider, fresh!)).toBe(200);
  expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ v: 2 });
  // The lock was released by its owner.
  expect(await stack.redis.exists(lockKey(stack, before.id))).toBe(0);
});

test('a lock holder killed mid-refresh is taken over after the lease, with one refresh grant', async () => {
  const browser = await login();
  const before = await readLogin(stack, browser);
  const grants = refreshGrants(stack.provider);
  const revoked = stack.provider.count('grant.revoked');
  await waitUntilDue(before.tokens);

  // The first process takes the lock and sends its refresh; the token endpoint holds the request, and the process dies.
  stub.mode = 'hang';
  const held = stub.nextHang();
  const doomed = getJson(browser, `${first.url}/api/token`).catch(() => undefined);
  await held;
  const lock = lockKey(stack, before.id);
  expect(await stack.redis.get(lock)).not.toBeNull();
  await first.kill('SIGKILL');
  await doomed;
  stub.mode = 'pass';
  // The dead holder's lock is still there: the survivor can only get it once the lease runs out.
  const asked = Date.now();
  const remaining = await stack.redis.pttl(lock);
  expect(remaining).toBeGreaterThan(500);
  // Redis computed `remaining` after `asked`: the lease ends at `asked + remaining` or later (same machine, same clock).
  const leaseEnd = asked + remaining;

  const survivor = await getJson(browser, `${second.url}/api/token`);

  expect(survivor.status).toBe(200);
  // It waited the lease out: its refresh reached the server only after the dead holder's lease ended.
  expect(stub.lastPostAt).toBeGreaterThanOrEqual(leaseEnd - 2);
  expect(survivor.body.accessToken).not.toBe(before.tokens.accessToken);
  expect(refreshGrants(stack.provider) - grants).toBe(1);
  expect(stack.provider.count('grant.revoked')).toBe(revoked);
  expect(await userinfoStatus(stack.provider, String(survivor.body.accessToken))).toBe(200);
  expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ v: 2 });
  // This process sees the same tokens without refreshing.
  expect((await getJson(browser, `${stack.appUrl}/api/token`)).body.accessToken).toBe(survivor.body.accessToken);
  expect(refreshGrants(stack.provider) - grants).toBe(1);
});

import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import {
  expectLoginEnded,
  getJson,
  inMode,
  installTokenStub,
  readLogin,
  readRecord,
  refreshGrants,
  spawnAppProcess,
  startRefreshStack,
  tokenKey,
  waitUntilDue,
  type AppProcess,
  type TokenStub,
} from './support.js';

// The refreshed ID token's signature, checked against the issuer's key set (its jwks_uri). A second app process
// serves the refreshes that must fetch the key set: one that has never fetched it, as after a deploy.
let stack: Stack;
let stub: TokenStub;
let fresh: AppProcess;

beforeAll(async () => {
  stack = await startRefreshStack({ httpTimeout: 1000 });
  stub = installTokenStub(stack.provider);
  fresh = await spawnAppProcess(stack);
}, 60_000);

afterAll(async () => {
  stub.keysDown = false;
  await fresh?.kill('SIGKILL');
  await stack?.close();
});

async function dueLogin() {
  const browser = new Browser();
  expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200);
  const before = await readLogin(stack, browser);
  const stored = await readRecord(stack.redis, tokenKey(stack, before.id));
  await waitUntilDue(before.tokens);
  return { browser, before, stored };
}

test('a refreshed ID token signed with a key that is not the issuer’s ends the login', async () => {
  const { browser, before } = await dueLogin();
  const result = await inMode(stub, 'foreignKey', () => getJson(browser, `${stack.appUrl}/api/token`));
  await expectLoginEnded(stack, browser, before.id, result, /signature/);
});

test('with the key set down, a refresh keeps the rotated tokens, and not the ID token nothing vouches for', async () => {
  const { browser, before, stored } = await dueLogin();
  const grants = refreshGrants(stack.provider);
  stub.keysDown = true;
  let during: Awaited<ReturnType<typeof getJson>>;
  try {
    during = await getJson(browser, `${fresh.url}/api/token`);
  } finally {
    stub.keysDown = false;
  }
  // The server rotated the refresh token: losing the new one would end the login at the next refresh.
  expect(refreshGrants(stack.provider) - grants).toBe(1);
  expect(during.status).toBe(200);
  const kept = await readRecord(stack.redis, tokenKey(stack, before.id));
  expect(kept).toMatchObject({ v: 2 });
  expect(kept?.tokens?.refreshToken).not.toBe(before.tokens.refreshToken);
  expect(kept?.tokens?.accessToken).toBe(during.body.accessToken);
  // The unverified ID token and its claims are not taken: the login's previous ones stay.
  expect(kept?.tokens?.idToken).toBe(stored?.tokens?.idToken);
  expect(kept?.claims).toEqual(stored?.claims);

  // With the keys back, the next refresh presents the rotated token (no reuse detected) and takes the new ID token.
  const after = await getJson(browser, `${fresh.url}/api/refresh`);
  expect(after.status).toBe(200);
  expect(stack.provider.count('grant.revoked')).toBe(0);
  const next = await readRecord(stack.redis, tokenKey(stack, before.id));
  expect(next).toMatchObject({ v: 3 });
  expect(next?.tokens?.idToken).not.toBe(stored?.tokens?.idToken);
  expect(next?.claims?.iat).toBeGreaterThan(Number(stored?.claims?.iat));
});

import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { createIssuerKeys, KeySetUnavailable } from '../../lib/keys.js';
import { resolveOptions } from '../../lib/options.js';
import { listen, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import {
  expectLastRefreshRevoked,
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

// The refreshed ID token's signature, checked against the issuer's key set (its jwks_uri). The refreshes that must
// fetch the key set run in an app process of their own that has never fetched it, as after a deploy.
let stack: Stack;
let stub: TokenStub;

beforeAll(async () => {
  stack = await startRefreshStack({ httpTimeout: 1000 });
  stub = installTokenStub(stack.provider);
});

afterAll(async () => {
  stub.keysDown = false;
  await stack?.close();
});

/** Runs `use` against a new app process, which has not fetched the issuer's keys yet. */
async function withColdProcess<T>(use: (app: AppProcess) => Promise<T>): Promise<T> {
  const app = await spawnAppProcess(stack);
  try {
    return await use(app);
  } finally {
    await app.kill('SIGKILL');
  }
}

/** Calls `url` while the provider's key set answers 503. */
async function withKeysDown(browser: Browser, url: string) {
  stub.keysDown = true;
  try {
    return await getJson(browser, url);
  } finally {
    stub.keysDown = false;
  }
}

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
  // The tokens of the answer it refused are held by nobody: revoked, not left alive at the provider.
  await expectLastRefreshRevoked(stack.provider);
});

test('with the key set down, a refresh keeps the rotated tokens, and not the ID token nothing vouches for', async () => {
  const { browser, before, stored } = await dueLogin();
  const grants = refreshGrants(stack.provider);
  // Other tests' refused answers revoke their grants; this login's must not be.
  const revoked = stack.provider.count('grant.revoked');
  await withColdProcess(async (fresh) => {
    const during = await withKeysDown(browser, `${fresh.url}/api/token`);
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
    expect(stack.provider.count('grant.revoked')).toBe(revoked);
    const next = await readRecord(stack.redis, tokenKey(stack, before.id));
    expect(next).toMatchObject({ v: 3 });
    expect(next?.tokens?.idToken).not.toBe(stored?.tokens?.idToken);
    expect(next?.claims?.iat).toBeGreaterThan(Number(stored?.claims?.iat));
  });
});

test('with the key set down, a refreshed ID token naming another user still ends the login', async () => {
  const { browser, before } = await dueLogin();
  const answer = await withColdProcess((fresh) => inMode(stub, 'swapSub', () => withKeysDown(browser, `${fresh.url}/api/token`)));
  // Unverifiable, but claims naming someone else are reason enough not to keep this response (§12.2).
  await expectLoginEnded(stack, browser, before.id, answer, /sub/);
  await expectLastRefreshRevoked(stack.provider);
});

test('a key-set fetch gives up after httpTimeout, in milliseconds as given, and says the keys are unavailable', async () => {
  const silent = await listen();
  silent.handle(() => undefined);
  try {
    const config = resolveOptions({ issuer: silent.url, clientId: 'app', redirectUri: 'http://127.0.0.1/callback', allowInsecureRequests: true, httpTimeout: 300 });
    const getKey = createIssuerKeys(config)(`${silent.url}/jwks`);
    const started = performance.now();
    const failure = await Promise.resolve(getKey({ alg: 'RS256', kid: 'k' }, { payload: '', signature: '' } as never)).catch((err: unknown) => err);

    expect(failure).toBeInstanceOf(KeySetUnavailable);
    expect(performance.now() - started).toBeLessThan(2000);
  } finally {
    silent.server.closeAllConnections();
    await silent.close();
  }
});

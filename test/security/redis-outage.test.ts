import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import type { Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startPrivateRedis, type PrivateRedis } from '../setup/global-setup.js';
import { getJson, readLogin, readRecord, refreshGrants, startRefreshStack, tokenKey, userinfoStatus, waitUntilDue } from '../refresh/support.js';

// A real Redis that stops answering (SIGSTOP: connections stay open, nothing comes back), not a patched client: what
// a hung or partitioned Redis does to every process. The app's client gives up on a command after 300 ms
// (`commandTimeout`), as a production client should; without it requests would wait as long as Redis does.
let redisServer: PrivateRedis;
let stack: Stack;
let paused = false;
/** Set by a test: the grant type whose token response, once the provider made it, stops Redis before it goes out. */
let stopRedisAfterGrant: string | undefined;

function stopRedis(): void {
  redisServer.signal('SIGSTOP');
  paused = true;
}

function resumeRedis(): void {
  if (!paused) return;
  redisServer.signal('SIGCONT');
  paused = false;
}

beforeAll(async () => {
  redisServer = await startPrivateRedis();
  stack = await startRefreshStack({}, {}, {}, { url: redisServer.url, options: { commandTimeout: 300 } });
  stack.provider.provider.use(async (ctx, next) => {
    await next();
    const grantType = (ctx as unknown as { oidc?: { params?: { grant_type?: unknown } } }).oidc?.params?.grant_type;
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.status === 200 && grantType === stopRedisAfterGrant) {
      stopRedisAfterGrant = undefined;
      stopRedis();
    }
  });
  // Koa composes its middleware when callback() is called: serve with a handler composed now.
  const handler = stack.provider.provider.callback();
  stack.provider.server.removeAllListeners('request');
  stack.provider.server.on('request', handler);
}, 30_000);

afterEach(() => {
  stopRedisAfterGrant = undefined;
  resumeRedis();
});

afterAll(async () => {
  resumeRedis();
  await stack?.close();
  await redisServer?.stop();
});

async function login(): Promise<Browser> {
  const browser = new Browser();
  expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200);
  return browser;
}

describe('a Redis that stops answering', () => {
  test('lets nobody in while it is down, and loses nothing: the same login works once it answers again', async () => {
    const browser = await login();
    const before = await getJson(browser, `${stack.appUrl}/me`);
    expect(before.status).toBe(200);
    const token = await getJson(browser, `${stack.appUrl}/api/token`);
    expect(token.status).toBe(200);
    const grants = refreshGrants(stack.provider);

    stopRedis();
    const duringMe = await getJson(browser, `${stack.appUrl}/me`);
    const duringToken = await getJson(browser, `${stack.appUrl}/api/token`);
    const newcomer = new Browser();
    const duringLogin = await newcomer.request(`${stack.appUrl}/login`);
    resumeRedis();

    // express-session cannot load the session: the request never reaches the route, and nothing of the login shows.
    for (const answer of [duringMe, duringToken]) {
      expect(answer.status).toBeGreaterThanOrEqual(500);
      expect(JSON.stringify(answer.body)).not.toContain(String(before.body.claims && (before.body.claims as { sub: string }).sub));
      expect(JSON.stringify(answer.body)).not.toContain(String(token.body.accessToken));
    }
    // No login starts without a place to keep its transaction: no redirect to the authorization server.
    expect(duringLogin.status).toBeGreaterThanOrEqual(500);
    expect(duringLogin.headers.get('location')).toBeNull();
    // Nor a cookie naming a session that was never stored.
    expect(duringLogin.headers.get('set-cookie')).toBeNull();

    const after = await getJson(browser, `${stack.appUrl}/me`);
    expect(after.status).toBe(200);
    expect(after.body.claims).toEqual(before.body.claims);
    expect((await getJson(browser, `${stack.appUrl}/api/token`)).body.accessToken).toBe(token.body.accessToken);
    expect(refreshGrants(stack.provider)).toBe(grants);
  });

  test('during the callback, after the code exchange: a clean 503, no login, and the sign-in can start over', async () => {
    stopRedisAfterGrant = 'authorization_code';
    const browser = new Browser();

    const result = await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    resumeRedis();

    expect(stopRedisAfterGrant).toBeUndefined();
    expect(result.status).toBe(503);
    expect(result.body).toContain('session_unavailable');
    expect(result.body).not.toMatch(/\n\s+at /);
    // Not logged in, once Redis is back either: no half-made login was kept anywhere.
    expect((await getJson(browser, `${stack.appUrl}/me`)).status).toBe(401);
    const callbackUrl = result.steps.map((step) => step.url).find((url) => new URL(url).pathname === '/callback');
    expect(callbackUrl).toBeDefined();
    // The authorization response cannot be used again.
    const replay = await getJson(browser, callbackUrl!);
    expect(replay.status).toBe(400);
    expect(replay.body.error).toBe('invalid_state');
    expect((await getJson(browser, `${stack.appUrl}/me`)).status).toBe(401);
    // And the user can simply sign in again.
    expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200);
    expect((await getJson(browser, `${stack.appUrl}/me`)).status).toBe(200);
  });

  // A stopped Redis still holds the commands that timed out in its socket buffers and runs them when it resumes (the
  // refresher's store writes, express-session's save): this is the hung-Redis case, where what matters is that nothing
  // the server rotated is lost and nothing refreshes twice. Lost writes are covered in test/refresh/refresh.test.ts.
  test('during a refresh, after the server rotated the token: nothing is lost and nothing refreshes twice once Redis answers again', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    const grants = refreshGrants(stack.provider);
    const revoked = stack.provider.count('grant.revoked');
    await waitUntilDue(before.tokens);
    stopRedisAfterGrant = 'refresh_token';
    // Redis comes back after a few of the refresher's write attempts have timed out.
    const resume = setTimeout(resumeRedis, 1500);

    const result = await getJson(browser, `${stack.appUrl}/api/token`);
    clearTimeout(resume);
    resumeRedis();

    expect(stopRedisAfterGrant).toBeUndefined();
    expect(result.status).toBe(200);
    const fresh = String(result.body.accessToken);
    expect(fresh).not.toBe(before.tokens.accessToken);
    expect(refreshGrants(stack.provider) - grants).toBe(1);
    expect(stack.provider.count('grant.revoked')).toBe(revoked);
    expect(await userinfoStatus(stack.provider, fresh)).toBe(200);
    expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ v: 2 });
    // The next call uses the stored token: no second refresh, which reuse detection would punish.
    expect((await getJson(browser, `${stack.appUrl}/api/token`)).body.accessToken).toBe(fresh);
    expect(refreshGrants(stack.provider) - grants).toBe(1);
  });
});

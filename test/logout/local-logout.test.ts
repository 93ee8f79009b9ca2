import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { unpackTokens } from '../../lib/tokens.js';
import { Browser } from '../helpers/browser.js';
import { buildApp, CLIENT_ID, CLIENT_SECRET, listen, mountApp, sessionCookie, startStack, type Stack } from '../helpers/app.js';
import { startProvider } from '../helpers/provider.js';
import { loginUntilCallback } from '../helpers/security.js';
import { me, postLogout, sessionIdOf, storedSession, tryRefresh, userinfoStatus, withFailingCommand } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ auth: { postLogoutRedirect: '/goodbye?from=logout' } });
});
afterAll(async () => stack.close());

/** A logged-in browser with its session cookie and the tokens the server holds for it. */
async function loggedIn() {
  const browser = new Browser();
  await browser.login(`${stack.appUrl}/login?returnTo=/me`);
  const cookie = sessionCookie(browser, stack.appUrl);
  if (cookie === undefined) throw new Error('no session cookie after login');
  const session = await storedSession(stack.redis, stack.sessionPrefix, cookie);
  const tokens = unpackTokens((session?.oauth as { login?: { tokens?: unknown } } | undefined)?.login?.tokens);
  if (tokens?.refreshToken === undefined) throw new Error('the login holds no refresh token');
  return { browser, cookie, accessToken: tokens.accessToken, refreshToken: tokens.refreshToken };
}

describe('POST /logout', () => {
  test('revokes both tokens, destroys the session, clears the cookie and redirects 303 to postLogoutRedirect', async () => {
    const { browser, cookie, accessToken, refreshToken } = await loggedIn();
    expect((await me(browser, stack.appUrl)).status).toBe(200);
    expect(await userinfoStatus(stack.provider.issuer, accessToken)).toBe(200);

    const response = await postLogout(browser, stack.appUrl);

    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toBe('/goodbye?from=logout');
    expect(response.headers.get('cache-control')).toBe('no-store');
    const cleared = browser.setCookies.filter((c) => c.header.startsWith('connect.sid=;'));
    expect(cleared).toHaveLength(1);
    expect(cleared[0]?.header).toMatch(/Expires=Thu, 01 Jan 1970/);
    expect(cleared[0]?.header).toMatch(/Path=\//);
    expect(sessionCookie(browser, stack.appUrl)).toBeUndefined();
    // Gone from the store: the old cookie, presented again, is refused.
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect((await me(new Browser(), stack.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
    // Revoked at the provider (RFC 7009): userinfo refuses the access token, the token endpoint the refresh token.
    expect(await userinfoStatus(stack.provider.issuer, accessToken)).toBe(401);
    expect(await tryRefresh(stack.provider.issuer, refreshToken)).toEqual({ status: 400, error: 'invalid_grant' });
  });

  test('removes the login from the back-channel index', async () => {
    const { browser, cookie } = await loggedIn();
    const id = sessionIdOf(cookie);
    const subKeys = await stack.redis.keys(`${stack.authOptions.keyPrefix}logout:sub:*`);
    expect(subKeys).toHaveLength(1);
    expect(await stack.redis.sismember(subKeys[0]!, id)).toBe(1);
    expect(await stack.redis.ttl(subKeys[0]!)).toBeGreaterThan(0);

    expect((await postLogout(browser, stack.appUrl)).status).toBe(303);

    expect(await stack.redis.sismember(subKeys[0]!, id)).toBe(0);
  });

  test('without a login, still ends the session and redirects', async () => {
    // A session without a login: a pending transaction, its authorization response not yet delivered.
    const browser = new Browser();
    const pending = await loginUntilCallback(stack, browser);
    const cookie = sessionCookie(browser, stack.appUrl)!;
    const session = await storedSession(stack.redis, stack.sessionPrefix, cookie);
    expect(session).not.toBeNull();
    expect((session?.oauth as { login?: unknown } | undefined)?.login).toBeUndefined();
    expect(Object.keys((session?.oauth as { tx?: object } | undefined)?.tx ?? {})).toEqual([pending.state]);

    const response = await postLogout(browser, stack.appUrl);

    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toBe('/goodbye?from=logout');
    // The session is gone from the store and the browser was told to drop its cookie.
    expect(await stack.redis.exists(`${stack.sessionPrefix}${sessionIdOf(cookie)}`)).toBe(0);
    const cleared = response.headers.getSetCookie().filter((c) => c.startsWith('connect.sid=;'));
    expect(cleared).toHaveLength(1);
    expect(cleared[0]).toMatch(/Expires=Thu, 01 Jan 1970/);
    expect(sessionCookie(browser, stack.appUrl)).toBeUndefined();
    // The pending login died with it: its authorization response, even with the old cookie, finds no state.
    const callback = await new Browser().request(pending.callbackUrl, { headers: { accept: 'application/json', cookie: `connect.sid=${cookie}` } });
    expect(callback.status).toBe(400);
    expect(JSON.parse(callback.body)).toMatchObject({ error: 'invalid_state' });
  });
});

describe('POST /logout, from states a plain login does not reach', () => {
  test('a login the token store already ended (a tombstone, which holds no tokens) still has the tokens its session holds revoked', async () => {
    const { browser, cookie, accessToken, refreshToken } = await loggedIn();
    const loginId = ((await storedSession(stack.redis, stack.sessionPrefix, cookie))?.oauth as { login: { id: string } }).login.id;
    // What a refresh refused in another process leaves, while this browser's session still holds its copy.
    await stack.redis.set(`${stack.authOptions.keyPrefix}tokens:${loginId}`, JSON.stringify({ v: 2, ended: true }), 'KEEPTTL');

    expect((await postLogout(browser, stack.appUrl)).status).toBe(303);

    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect(await userinfoStatus(stack.provider.issuer, accessToken)).toBe(401);
    expect(await tryRefresh(stack.provider.issuer, refreshToken)).toEqual({ status: 400, error: 'invalid_grant' });
  });

  test("a failure to write the login's tombstone does not fail the logout: the session goes, and the tokens it holds are revoked", async () => {
    const { browser, cookie, accessToken, refreshToken } = await loggedIn();
    const loginId = ((await storedSession(stack.redis, stack.sessionPrefix, cookie))?.oauth as { login: { id: string } }).login.id;
    // The token store ends a login with one EVAL on its key: that one fails.
    const { result: response, failures } = await withFailingCommand(
      stack.redis,
      'eval',
      () => postLogout(browser, stack.appUrl),
      (args) => String(args[2]).endsWith(`tokens:${loginId}`),
    );

    expect(failures).toBe(1);
    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toBe('/goodbye?from=logout');
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect(sessionCookie(browser, stack.appUrl)).toBeUndefined();
    // Without a tombstone, revocation is what keeps the login's tokens from outliving it.
    expect(JSON.parse((await stack.redis.get(`${stack.authOptions.keyPrefix}tokens:${loginId}`)) ?? 'null')).not.toMatchObject({ ended: true });
    expect(await userinfoStatus(stack.provider.issuer, accessToken)).toBe(401);
    expect(await tryRefresh(stack.provider.issuer, refreshToken)).toEqual({ status: 400, error: 'invalid_grant' });
  });

  test('a failure to clean the back-channel index does not fail the logout: the session is gone already', async () => {
    const { browser, cookie } = await loggedIn();
    const { result: response, failures } = await withFailingCommand(stack.redis, 'srem', () => postLogout(browser, stack.appUrl));

    expect(failures).toBeGreaterThan(0);
    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toBe('/goodbye?from=logout');
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect(sessionCookie(browser, stack.appUrl)).toBeUndefined();
  });
});

describe('the back-channel index of a session that outlives sessionIndexTtl', () => {
  test("lives as long as the session cookie's maxAge, so that back-channel logout can find the session to its end", async () => {
    const long = await startStack({ auth: { sessionIndexTtl: 60 }, session: { cookie: { maxAge: 2 * 60 * 60 * 1000 } } });
    try {
      await long.browser.login(`${long.appUrl}/login?returnTo=/me`);
      const subKeys = await long.redis.keys(`${long.authOptions.keyPrefix}logout:sub:*`);
      expect(subKeys).toHaveLength(1);
      expect(await long.redis.ttl(subKeys[0]!)).toBeGreaterThan(60 * 60);
    } finally {
      await long.close();
    }
  });

  test("lives as long as connect-redis keeps a session without maxAge (its ttl, a day), when that is longer", async () => {
    const short = await startStack({ auth: { sessionIndexTtl: 60 } });
    try {
      await short.browser.login(`${short.appUrl}/login?returnTo=/me`);
      const subKeys = await short.redis.keys(`${short.authOptions.keyPrefix}logout:sub:*`);
      expect(subKeys).toHaveLength(1);
      expect(await short.redis.ttl(subKeys[0]!)).toBeGreaterThan(24 * 60 * 60 - 60);
    } finally {
      await short.close();
    }
  });
});

describe('a session cookie set with its own Path and Domain', () => {
  test('is cleared with that Path and Domain: a Set-Cookie with the defaults would not replace it in the browser', async () => {
    const listener = await listen();
    const provider = await startProvider({
      clients: [
        {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          redirect_uris: [`${listener.url}/app/callback`],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
    });
    const mounted = mountApp(listener, provider.issuer, {
      auth: { redirectUri: `${listener.url}/app/callback`, routes: { login: '/app/login', logout: '/app/logout' } },
      session: { cookie: { path: '/app', domain: '127.0.0.1' } },
    });
    try {
      const browser = new Browser();
      await browser.login(`${mounted.appUrl}/app/login?returnTo=/app/`);
      const cookie = sessionCookie(browser, mounted.appUrl)!;
      expect(await storedSession(mounted.redis, mounted.sessionPrefix, cookie)).toMatchObject({ oauth: { login: { id: expect.any(String) } } });

      const response = await browser.request(`${mounted.appUrl}/app/logout`, {
        method: 'POST',
        headers: { origin: mounted.appUrl, 'sec-fetch-site': 'same-origin', 'content-type': 'application/x-www-form-urlencoded' },
        body: '',
      });

      expect(response.status).toBe(303);
      const cleared = response.headers.getSetCookie().filter((c) => c.startsWith('connect.sid=;'));
      expect(cleared).toHaveLength(1);
      expect(cleared[0]).toMatch(/Expires=Thu, 01 Jan 1970/);
      expect(cleared[0]).toMatch(/; Path=\/app(;|$)/);
      expect(cleared[0]).toMatch(/; Domain=127\.0\.0\.1(;|$)/);
      expect(await storedSession(mounted.redis, mounted.sessionPrefix, cookie)).toBeNull();
    } finally {
      await listener.close();
      await provider.close();
      mounted.redis.disconnect();
    }
  });
});

describe('requests that must not log out', () => {
  test('GET /logout answers 405 and keeps the login', async () => {
    const { browser } = await loggedIn();
    const response = await browser.request(`${stack.appUrl}/logout`, { headers: { accept: 'application/json' } });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('POST');
    expect(JSON.parse(response.body)).toMatchObject({ error: 'method_not_allowed' });
    expect((await me(browser, stack.appUrl)).status).toBe(200);
  });

  test.each([
    ['a foreign Origin', { origin: 'http://evil.example' }],
    ['Sec-Fetch-Site: cross-site', { origin: '', 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site: cross-site with a forged same Origin', { origin: 'SELF', 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site: same-site from a sibling origin', { origin: 'http://sibling.127.0.0.1.nip.example', 'sec-fetch-site': 'same-site' }],
    ['Origin: null without Fetch Metadata', { origin: 'null' }],
  ])('a cross-site POST (%s) is refused with 403 and keeps the login', async (_name, headers) => {
    const { browser, accessToken } = await loggedIn();
    const sent: Record<string, string> = { ...headers, accept: 'application/json' };
    if (sent.origin === '') delete sent.origin;
    if (sent.origin === 'SELF') sent.origin = stack.appUrl;
    const response = await browser.request(`${stack.appUrl}/logout`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...sent },
      body: '',
    });
    expect(response.status).toBe(403);
    expect(JSON.parse(response.body)).toMatchObject({ error: 'forbidden' });
    expect((await me(browser, stack.appUrl)).status).toBe(200);
    expect(await userinfoStatus(stack.provider.issuer, accessToken)).toBe(200);
  });
});

describe('same-origin posts that browsers label oddly', () => {
  // Chromium sends `Origin: null` on a same-origin form post from a page with `Referrer-Policy: no-referrer`.
  test('Origin: null with Sec-Fetch-Site: same-origin logs out', async () => {
    const { browser } = await loggedIn();
    const response = await browser.request(`${stack.appUrl}/logout`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'null', 'sec-fetch-site': 'same-origin' },
      body: '',
    });
    expect(response.status).toBe(303);
    expect((await me(browser, stack.appUrl)).status).toBe(401);
  });
});

describe('when the authorization server is down', () => {
  test('a failed revocation does not block the local logout', async () => {
    const down = await startStack();
    try {
      const browser = new Browser();
      await down.browser.login(`${down.appUrl}/login?returnTo=/me`);
      const cookie = sessionCookie(down.browser, down.appUrl)!;
      expect((await me(down.browser, down.appUrl)).status).toBe(200);
      await down.provider.close();

      const response = await postLogout(down.browser, down.appUrl);

      expect(response.status).toBe(303);
      expect(response.headers.get('location')).toBe('/');
      expect(await storedSession(down.redis, down.sessionPrefix, cookie)).toBeNull();
      expect((await me(browser, down.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
    } finally {
      await down.listener.close();
      down.redis.disconnect();
    }
  });

  test('an app process that has not reached the server yet (discovery fails) still logs out locally', async () => {
    const down = await startStack();
    // A second process of the same app, started while the server is reachable but never asked it anything.
    const fresh = await listen();
    fresh.handle(buildApp({ redis: down.redis, sessionPrefix: down.sessionPrefix, auth: down.authOptions }));
    try {
      await down.browser.login(`${down.appUrl}/login?returnTo=/me`);
      const cookie = sessionCookie(down.browser, down.appUrl)!;
      await down.provider.close();

      // Same host (as behind a load balancer), so the browser sends the session cookie to the fresh process too.
      const response = await postLogout(down.browser, fresh.url, { origin: down.appUrl });

      expect(response.status).toBe(303);
      expect(response.headers.get('location')).toBe('/');
      expect(await storedSession(down.redis, down.sessionPrefix, cookie)).toBeNull();
      expect(sessionCookie(down.browser, fresh.url)).toBeUndefined();
    } finally {
      await fresh.close();
      await down.listener.close();
      down.redis.disconnect();
    }
  });
});

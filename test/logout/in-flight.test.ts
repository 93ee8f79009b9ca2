/**
 * A request that loaded a logged-in session, and modifies it (the app's own session data), makes express-session write
 * the whole session back as it ends. A logout meanwhile (`POST /logout` from another tab, a back-channel logout) has
 * destroyed that session: the write brings it back, login and all, and routes behind `requireAuth()` would take it for
 * a login. Every write of a session holding a login is followed by a check of the login's tombstone, which destroys
 * such a copy again.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import express from 'express';
import session from 'express-session';
import { RedisStore } from 'connect-redis';
import { auth } from '../../lib/index.js';
import { buildApp, connectRedis, listen, sessionCookie, SESSION_SECRET, startStack, type Listener, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { refreshRoutes } from '../refresh/fixtures/routes.js';
import { Gate, logoutClaims, logoutProviderConfiguration, me, postLogout, sendLogoutToken, signLogoutToken, storedSession } from './support.js';

/** `/api/slow-write` (the refresh tests' route) waits at the test's gate after loading the session, then writes to it. */
const slowWrite = (gate: () => Gate | undefined) => ({ slowWrite: async () => gate()?.enter() });

describe('a session written back by a request in flight when its login ended', () => {
  let stack: Stack;
  let gate: Gate | undefined;
  beforeAll(async () => {
    stack = await startStack({ provider: { configuration: logoutProviderConfiguration }, routes: (app) => refreshRoutes(app, slowWrite(() => gate)) });
  });
  afterAll(async () => {
    gate?.open();
    await stack.close();
  });

  /** A logged-in browser whose `/api/slow-write` has loaded the session and waits at the gate. */
  async function writeInFlight(user: string) {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: user });
    const cookie = sessionCookie(browser, stack.appUrl)!;
    gate = new Gate();
    const write = browser.request(`${stack.appUrl}/api/slow-write`);
    await gate.entered;
    return { browser, cookie, write };
  }

  test.each([
    ['POST /logout from another tab', async (browser: Browser) => expect((await postLogout(browser, stack.appUrl)).status).toBe(303)],
    [
      'a back-channel logout',
      async (_browser: Browser, user: string) => {
        const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub: user }));
        expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
      },
    ],
  ])('%s: the copy that request writes is destroyed again, and is no login', async (how, logout) => {
    const user = `writer-${how.length}`;
    const { browser, cookie, write } = await writeInFlight(user);
    await logout(browser, user);
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();

    gate!.open();
    expect((await write).status).toBe(200);
    // The write happened (express-session saved the app's data, and the login with it), and the check after it destroyed
    // it again before the response ended: the browser's next request cannot find it.
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect((await me(new Browser(), stack.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
  });

  test('without a logout, the write keeps the login and the app data (control)', async () => {
    const { cookie, write } = await writeInFlight('write-kept');
    gate!.open();
    expect((await write).status).toBe(200);
    const kept = await storedSession(stack.redis, stack.sessionPrefix, cookie);
    expect(kept?.lastVisit).toEqual(expect.any(Number));
    expect((await me(new Browser(), stack.appUrl, `connect.sid=${cookie}`)).status).toBe(200);
  });
});

describe('the check covers every write through the session store, once auth() has seen a request', () => {
  let stack: Stack;
  let early: Listener;
  let gate: Gate | undefined;
  beforeAll(async () => {
    stack = await startStack({ provider: { configuration: logoutProviderConfiguration } });
    // The same sessions served by an app whose session-writing route is mounted before auth(): its requests never
    // pass through auth().
    early = await listen();
    const app = buildApp({
      redis: stack.redis,
      sessionPrefix: stack.sessionPrefix,
      auth: stack.authOptions,
      routesBeforeAuth: (before) => refreshRoutes(before, slowWrite(() => gate)),
    });
    early.handle(app);
  });
  afterAll(async () => {
    gate?.open();
    await early.close();
    await stack.close();
  });

  test('a route mounted before auth() writes a copy of a logged-out session: destroyed again', async () => {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: 'early' });
    const cookie = sessionCookie(browser, stack.appUrl)!;
    const headers = { cookie: `connect.sid=${cookie}`, accept: 'application/json' };
    // The early app's first request passes through its auth().
    expect((await new Browser().request(`${early.url}/me`, { headers })).status).toBe(200);

    gate = new Gate();
    const write = new Browser().request(`${early.url}/api/slow-write`, { headers });
    await gate.entered;
    expect((await postLogout(browser, stack.appUrl)).status).toBe(303);
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    gate.open();
    expect((await write).status).toBe(200);

    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect((await new Browser().request(`${early.url}/me`, { headers })).status).toBe(401);
  });
});

test('a session store that cannot be extended: requests still work, and one warning says its writes go unchecked', async () => {
  const listener = await listen();
  const redis = connectRedis();
  const emitted = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
  try {
    const store = new RedisStore({ client: redis, prefix: `test:${Math.random()}:sess:` });
    const app = express();
    app.use(session({ store, secret: SESSION_SECRET, resave: false, saveUninitialized: false }));
    // express-session has set up the store; nothing may add to it from here on.
    Object.preventExtensions(store);
    app.use(auth({ issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's', redirectUri: `${listener.url}/callback`, allowInsecureRequests: true }));
    app.get('/', (req, res) => {
      (req.session as unknown as { visits?: number }).visits = 1;
      res.json({ authenticated: req.auth.isAuthenticated });
    });
    listener.handle(app);

    for (let i = 0; i < 2; i++) {
      const response = await fetch(`${listener.url}/`);
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ authenticated: false });
    }
    const warnings = emitted.mock.calls.filter(([, options]) => (options as { code?: string } | undefined)?.code === 'EXPRESS_OAUTH_PKCE_STORE_NOT_CHECKED');
    expect(warnings).toHaveLength(1);
    expect(String(warnings[0]?.[0])).toContain('not frozen');
  } finally {
    emitted.mockRestore();
    await listener.close();
    redis.disconnect();
  }
});

/**
 * A request that loaded a logged-in session, and modifies it (the app's own session data), makes express-session write
 * the whole session back as it ends. A logout meanwhile (`POST /logout` from another tab, a back-channel logout) has
 * destroyed that session: the write brings it back, login and all, and routes behind `requireAuth()` would take it for
 * a login. Every write of a session holding a login is followed by a check of the login's tombstone, which destroys
 * such a copy again.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import express, { type Express } from 'express';
import session from 'express-session';
import { RedisStore } from 'connect-redis';
import { auth, requireAuth } from '../../lib/index.js';
import { connectRedis, listen, sessionCookie, SESSION_SECRET, startStack, type Listener, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { logoutClaims, logoutProviderConfiguration, me, postLogout, sendLogoutToken, signLogoutToken, storedSession } from './support.js';

/** Holds a request between loading its session and modifying it, until the test opens it. */
class Gate {
  #entered!: () => void;
  #open!: () => void;
  readonly entered = new Promise<void>((resolve) => (this.#entered = resolve));
  readonly opened = new Promise<void>((resolve) => (this.#open = resolve));
  enter(): Promise<void> {
    this.#entered();
    return this.opened;
  }
  open(): void {
    this.#open();
  }
}

/** `POST /cart` (behind `requireAuth()`): waits at the gate, then writes the app's own data into the session. */
function cartRoute(app: Express, gate: () => Gate | undefined, path = '/cart'): void {
  app.post(path, requireAuth(), async (req, res) => {
    await gate()?.enter();
    (req.session as unknown as { cart?: string[] }).cart = ['book'];
    res.json({ ok: true });
  });
}

describe('a session written back by a request in flight when its login ended', () => {
  let stack: Stack;
  let gate: Gate | undefined;
  beforeAll(async () => {
    stack = await startStack({ provider: { configuration: logoutProviderConfiguration }, routes: (app) => cartRoute(app, () => gate) });
  });
  afterAll(async () => {
    gate?.open();
    await stack.close();
  });

  /** A logged-in browser whose `POST /cart` has loaded the session and waits at the gate. */
  async function cartInFlight(user: string) {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: user });
    const cookie = sessionCookie(browser, stack.appUrl)!;
    gate = new Gate();
    const cart = browser.request(`${stack.appUrl}/cart`, { method: 'POST', headers: { origin: stack.appUrl } });
    await gate.entered;
    return { browser, cookie, cart };
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
    const user = `cart-${how.length}`;
    const { browser, cookie, cart } = await cartInFlight(user);
    await logout(browser, user);
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();

    gate!.open();
    expect((await cart).status).toBe(200);
    // The write happened (express-session saved the cart, and the login with it), and the check after it destroyed
    // it again before the response ended: the browser's next request cannot find it.
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect((await me(new Browser(), stack.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
  });

  test('without a logout, the write keeps the login and the app data (control)', async () => {
    const { cookie, cart } = await cartInFlight('cart-kept');
    gate!.open();
    expect((await cart).status).toBe(200);
    const kept = await storedSession(stack.redis, stack.sessionPrefix, cookie);
    expect(kept?.cart).toEqual(['book']);
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
    const app = express();
    app.use(session({ store: new RedisStore({ client: stack.redis, prefix: stack.sessionPrefix }), secret: SESSION_SECRET, resave: false, saveUninitialized: false }));
    app.post('/early-cart', async (req, res) => {
      await gate?.enter();
      (req.session as unknown as { cart?: string[] }).cart = ['book'];
      res.json({ ok: true });
    });
    app.use(auth(stack.authOptions));
    app.get('/me', requireAuth(), (req, res) => res.json(req.auth.claims));
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
    const cart = new Browser().request(`${early.url}/early-cart`, { method: 'POST', headers });
    await gate.entered;
    expect((await postLogout(browser, stack.appUrl)).status).toBe(303);
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    gate.open();
    expect((await cart).status).toBe(200);

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

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import express from 'express';
import request from 'supertest';
import { requireAuth } from '../../lib/index.js';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { browserSessionId, readSession } from '../helpers/security.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({
    auth: { scope: 'openid email groups' },
    routes: (app) => {
      app.get('/admin', requireAuth((claims) => Array.isArray(claims?.groups) && claims.groups.includes('admin')), (_req, res) => {
        res.send('admin area');
      });
      app.get('/async-check', requireAuth(async (claims) => claims?.email_verified === true), (_req, res) => res.send('verified'));
      app.post('/write', requireAuth(), (_req, res) => res.send('written'));
      // A check that forgets to return its verdict (JavaScript callers get no type error).
      app.get('/no-verdict', requireAuth((() => undefined) as never), (_req, res) => res.send('let in'));
      app.get('/no-verdict-async', requireAuth((async () => undefined) as never), (_req, res) => res.send('let in'));
      // req.auth.tokens exactly as the app sees it: every own key, undefined values included.
      app.get('/raw-tokens', requireAuth(), (req, res) => {
        const tokens = req.auth.tokens as unknown as Record<string, unknown>;
        res.json({ keys: Reflect.ownKeys(tokens).map(String), tokens, values: Object.values(tokens).map((v) => (v === undefined ? null : v)) });
      });
      app.get('/id-token', async (req, res, next) => {
        try {
          res.json({ idToken: (await req.auth.getIdToken()) ?? null });
        } catch (err) {
          next(err);
        }
      });
    },
  });
});
afterAll(async () => stack.close());

async function loggedIn(user = 'alice'): Promise<Browser> {
  const browser = new Browser();
  const res = await browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: user });
  expect(res.status).toBe(200);
  return browser;
}

describe('requireAuth()', () => {
  test('a browser is redirected to log in with returnTo set to the original URL', async () => {
    const res = await new Browser().request(`${stack.appUrl}/me?x=1&y=2`);
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe(`/login?returnTo=${encodeURIComponent('/me?x=1&y=2')}`);
    // A cached redirect would send the user to log in again after they did.
    expect(res.headers.get('cache-control')).toBe('no-store');
  });

  test('an anonymous HEAD is turned away like a GET: a browser to log in, an API client with 401', async () => {
    const page = await new Browser().request(`${stack.appUrl}/me`, { method: 'HEAD' });
    expect(page.status).toBe(302);
    expect(page.headers.get('location')).toBe(`/login?returnTo=${encodeURIComponent('/me')}`);
    const api = await new Browser().request(`${stack.appUrl}/me`, { method: 'HEAD', headers: { accept: 'application/json' } });
    expect(api.status).toBe(401);
  });

  test('a check that returns no verdict (undefined), synchronously or not, is a refusal: 403', async () => {
    const alice = await loggedIn('alice');
    alice.headers = { accept: 'application/json' };
    for (const path of ['/no-verdict', '/no-verdict-async']) {
      const res = await alice.request(`${stack.appUrl}${path}`);
      expect(res.status).toBe(403);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'forbidden' });
    }
  });

  test.each([
    ['longer than returnTo may be', `/me?q=${'a'.repeat(2100)}`],
    ['short enough, but too long for the login query once encoded', `/me?q=${'é'.repeat(800)}`],
  ])('a guarded URL %s sends the browser to log in without returnTo, and the login works', async (_case, path) => {
    const res = await new Browser().request(`${stack.appUrl}${path}`);
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe('/login');
    const browser = new Browser();
    const landed = await browser.login(`${stack.appUrl}${path}`);
    expect(landed.status).toBe(200);
    expect(landed.url).toBe(`${stack.appUrl}/`);
  });

  test('an API client gets 401 with a JSON body, not cached', async () => {
    // text/plain names neither answer: JSON, as for any client that does not prefer HTML.
    for (const accept of ['application/json', '*/*', 'text/plain', undefined]) {
      const browser = new Browser();
      browser.headers = accept ? { accept } : {};
      const res = await browser.request(`${stack.appUrl}/me`);
      expect(res.status).toBe(401);
      expect(res.headers.get('content-type')).toMatch(/application\/json/);
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(JSON.parse(res.body)).toMatchObject({ error: 'unauthorized' });
    }
  });

  test('a non-GET browser request gets 401, not a redirect that would lose its body', async () => {
    const res = await new Browser().request(`${stack.appUrl}/write`, { method: 'POST' });
    expect(res.status).toBe(401);
  });

  test('the whole round trip: guarded page → login → back to the guarded page', async () => {
    const browser = new Browser();
    const res = await browser.login(`${stack.appUrl}/me?from=guard`);
    expect(res.status).toBe(200);
    expect(res.url).toBe(`${stack.appUrl}/me?from=guard`);
    expect(JSON.parse(res.body).claims.sub).toBe('alice');
  });

  test('a logged-in user passes; one failing the check gets 403 forbidden, never a login loop', async () => {
    const alice = await loggedIn('alice');
    const denied = await alice.request(`${stack.appUrl}/admin`);
    expect(denied.status).toBe(403);
    expect(denied.body).toContain('forbidden');
    alice.headers = { accept: 'application/json' };
    const deniedJson = await alice.request(`${stack.appUrl}/admin`);
    expect(JSON.parse(deniedJson.body)).toMatchObject({ error: 'forbidden' });

    const admin = await loggedIn('admin');
    const allowed = await admin.request(`${stack.appUrl}/admin`);
    expect(allowed.status).toBe(200);
    expect(allowed.body).toBe('admin area');
    expect((await admin.request(`${stack.appUrl}/async-check`)).body).toBe('verified');
  });

  test('without auth() mounted it fails clearly, and a non-function check is a TypeError at startup', async () => {
    const app = express();
    app.get('/x', requireAuth(), (_req, res) => res.send('no'));
    app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).send(err.message);
    });
    const res = await request(app).get('/x');
    expect(res.status).toBe(500);
    expect(res.text).toContain('mount auth(');
    expect(() => requireAuth('admin' as never)).toThrow(TypeError);
  });

  test("a req.auth that auth() did not make (another library's, claiming to be logged in) is not trusted", async () => {
    const app = express();
    app.use((req, _res, next) => {
      (req as { auth?: unknown }).auth = { isAuthenticated: true, claims: { sub: 'mallory' } };
      next();
    });
    app.get('/x', requireAuth(), (_req, res) => res.send('let in'));
    app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(500).send(err.message);
    });
    const res = await request(app).get('/x');
    expect(res.status).toBe(500);
    expect(res.text).toContain('mount auth(');
  });
});

describe('req.auth', () => {
  test('is present and anonymous before login', async () => {
    const res = await new Browser().request(`${stack.appUrl}/`);
    expect(res.body).toBe('hello anonymous');
  });

  test('exposes claims and tokens (never the refresh token) after login, and getAccessToken() returns the token', async () => {
    const browser = await loggedIn();
    expect((await browser.request(`${stack.appUrl}/`)).body).toBe('hello alice');
    browser.headers = { accept: 'application/json' };
    const token = JSON.parse((await browser.request(`${stack.appUrl}/token`)).body).accessToken;
    expect(typeof token).toBe('string');
    const me = JSON.parse((await browser.request(`${stack.appUrl}/me`)).body);
    expect(me.tokens.tokenType).toBe('Bearer');
    expect(me.tokens.expiresAt).toBeGreaterThan(Date.now() / 1000);

    // req.auth.tokens as it is: exactly the keys of TokenSet, and none of its values is the refresh token.
    const sid = browserSessionId(browser, stack.appUrl)!;
    const loginId = (await readSession(stack.redis, stack.sessionPrefix, sid))?.oauth?.login?.id;
    expect(typeof loginId).toBe('string');
    const stored = JSON.parse((await stack.redis.get(`${stack.authOptions.keyPrefix}tokens:${loginId}`))!).tokens;
    expect(typeof stored.refreshToken).toBe('string');
    const rawResponse = await browser.request(`${stack.appUrl}/raw-tokens`);
    expect(rawResponse.status).toBe(200);
    const raw = JSON.parse(rawResponse.body);
    expect([...raw.keys].sort()).toEqual(['accessToken', 'expiresAt', 'scope', 'tokenType']);
    expect(raw.tokens).toEqual({ accessToken: token, tokenType: 'Bearer', expiresAt: stored.expiresAt, scope: stored.scope });
    expect(raw.values).not.toContain(stored.refreshToken);
    expect(rawResponse.body).not.toContain(stored.refreshToken);
    // The access token works at the provider (back-channel, in the Authorization header).
    const userinfo = await fetch(`${stack.provider.issuer}/me`, { headers: { authorization: `Bearer ${token}` } });
    expect(userinfo.status).toBe(200);
  });

  test('getIdToken() returns the raw ID token of the login from the token store; without a login it rejects with 401', async () => {
    const browser = await loggedIn();
    browser.headers = { accept: 'application/json' };
    const { idToken } = JSON.parse((await browser.request(`${stack.appUrl}/id-token`)).body);
    const payload = JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url').toString());
    expect(payload).toMatchObject({ sub: 'alice', iss: stack.provider.issuer, aud: 'test-app' });
    const me = JSON.parse((await browser.request(`${stack.appUrl}/me`)).body);
    expect(me.claims.nonce).toBe(payload.nonce);

    const anonymous = new Browser();
    anonymous.headers = { accept: 'application/json' };
    // An app route: the AuthError goes to the app's error handling (Express's default here), with its status.
    const res = await anonymous.request(`${stack.appUrl}/id-token`);
    expect(res.status).toBe(401);
  });

  test('POST /logout ends the login (303 to /); GET /logout does not', async () => {
    const browser = await loggedIn();
    const get = await browser.request(`${stack.appUrl}/logout`);
    expect(get.status).toBe(405);
    expect((await browser.request(`${stack.appUrl}/`)).body).toBe('hello alice');
    const post = await browser.request(`${stack.appUrl}/logout`, { method: 'POST', headers: { origin: stack.appUrl } });
    expect(post.status).toBe(303);
    expect(post.headers.get('location')).toBe('/');
    expect((await browser.request(`${stack.appUrl}/`)).body).toBe('hello anonymous');
  });
});

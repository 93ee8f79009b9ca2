/**
 * auth() is an express.Router whose entry point is the library's exact-path dispatch (a Router's own per-request
 * dispatch cost more than the library's work: bench/FIXES.md), and requireAuth() is synchronous unless its check is not. These tests pin what that must not change: AuthErrors from every route are
 * rendered by auth() itself, other requests reach the app, and a guard's check is never taken as "allowed" unless it
 * says so, synchronously or not.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import { auth, requireAuth, type AuthCheck } from '../../lib/index.js';
import { listen, startStack, type Listener, type Stack } from '../helpers/app.js';
import { captureOutput } from '../helpers/security.js';

/** A stand-in for express-session, enough where the route fails before the session is touched. */
const standInSession: RequestHandler = (req, _res, next) => {
  (req as unknown as { session: object }).session = { save: (cb: () => void) => cb() };
  next();
};

/** The app's own last-resort error handler: anything reaching it was not rendered by the library. */
const appErrorHandler: ErrorRequestHandler = (_err, _req, res, _next) => {
  res.status(599).json({ reachedApp: true });
};

let stack: Stack;
let cookie: string;

function guarded(app: Express): void {
  const check = (name: string, fn: AuthCheck) => app.get(`/check/${name}`, requireAuth(fn), (_req, res) => void res.json({ passed: name }));
  check('sync-true', () => true);
  check('sync-false', () => false);
  check('async-true', async () => true);
  check('async-false', async () => false);
  // Not a native promise: must still be awaited, not taken as a truthy value.
  check('thenable-false', () => ({ then: (resolve: (v: boolean) => void) => resolve(false) }) as unknown as Promise<boolean>);
  check('async-throws', async () => {
    throw new Error('check failed');
  });
  check('sync-throws', () => {
    throw new Error('check failed');
  });
  app.get('/after-auth', (req, res) => void res.json({ authenticated: req.auth.isAuthenticated }));
  // The app's own answer to a request target that names no path (no route can match it), reading req.auth as any route may.
  app.use((req, res, next) => (req.path.startsWith('/') ? next() : void res.status(404).json({ authenticated: req.auth.isAuthenticated })));
  app.use(appErrorHandler);
}

beforeAll(async () => {
  stack = await startStack({ routes: guarded });
  await stack.browser.login(`${stack.appUrl}/login?returnTo=/me`);
  cookie = stack.browser.cookieHeader(new URL(`${stack.appUrl}/me`));
});
afterAll(async () => stack.close());

async function get(path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${stack.appUrl}${path}`, { redirect: 'manual', headers: { accept: 'application/json', cookie, ...headers } });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

describe('auth() renders its own errors', () => {
  test('a route that calls next(err) (GET /logout) gets a clean 405 with its code, not the app error handler', async () => {
    const response = await get('/logout');

    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('POST');
    expect(response.body).toMatchObject({ error: 'method_not_allowed', status: 405 });
  });

  test('a route that throws asynchronously (callback without state) gets a clean 400', async () => {
    const response = await get('/callback?code=abc');

    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ error: 'invalid_state' });
    expect(JSON.stringify(response.body)).not.toMatch(/at .*\.ts:\d+/);
  });

  test.each([
    ['OPTIONS', '*'],
    ['GET', '*'],
    // Absolute-form with a host url.parse() folds into the path: its path is "%zz/login", without the leading slash.
    ['GET', 'http://%zz/login'],
  ])('a request target that names no path (%s %s), which express-session leaves without a session, goes on to the app with an anonymous req.auth: no 500, nothing logged', async (method, path) => {
    // fetch cannot send a request target that is not a path; node:http sends it as given.
    const send = () =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const { hostname, port } = new URL(stack.appUrl);
        const request = httpRequest({ host: hostname, port, method, path, headers: { accept: 'application/json' } }, (response) => {
          let body = '';
          response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
        });
        request.on('error', reject);
        request.end();
      });
    const output = captureOutput();
    let response;
    try {
      response = await send();
    } finally {
      output.restore();
    }

    // The app's answer, with a usable req.auth (anonymous: no session).
    expect(response.status).toBe(404);
    expect(JSON.parse(response.body)).toEqual({ authenticated: false });
    expect(output.text()).not.toContain('express-oauth-pkce');
  });

  test.each([
    ['POST', '/login'],
    ['POST', '/callback?code=x&state=y'],
    // Paths are matched literally: not as a prefix, not without case, not with a trailing slash.
    ['GET', '/login/'],
    ['GET', '/loginx'],
    ['GET', '/LOGIN'],
  ])('%s %s, which no route takes, goes on to the app (here its 404)', async (method, path) => {
    const response = await fetch(`${stack.appUrl}${path}`, { method, redirect: 'manual', headers: { accept: 'application/json', cookie } });

    expect(response.status).toBe(404);
  });

  test.each([
    ['PUT', '/logout'],
    ['DELETE', '/logout'],
    ['PUT', '/backchannel-logout'],
  ])('%s %s is refused with 405 and Allow: POST, not run as the POST route', async (method, path) => {
    const response = await fetch(`${stack.appUrl}${path}`, { method, redirect: 'manual', headers: { accept: 'application/json', cookie } });

    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('POST');
    expect(await response.json()).toMatchObject({ error: 'method_not_allowed' });
  });

  test('other requests go on to the app with req.auth set', async () => {
    expect(await get('/after-auth')).toMatchObject({ status: 200, body: { authenticated: true } });
    expect(await get('/after-auth', { cookie: '' })).toMatchObject({ status: 200, body: { authenticated: false } });
  });
});

describe('auth() is an Express Router', () => {
  test('it is a Router, and routes an app adds to it run after the library dispatch, with req.auth', async () => {
    const listener = await listen();
    try {
      const router = auth({
        ...stack.authOptions,
        redirectUri: `${listener.url}/callback`,
        // An error that is not the library's: it goes to the app's error handler, not past it to the router's routes.
        loginParams: () => {
          throw new Error('a broken hook');
        },
      });
      const routerPrototype = (r: object) => Object.getPrototypeOf(Object.getPrototypeOf(r));
      expect(routerPrototype(router)).toBe(routerPrototype(express.Router()));
      expect(typeof router.get).toBe('function');
      router.get('/extra', (req, res) => void res.json({ extra: true, authenticated: req.auth.isAuthenticated }));
      const app = express();
      app.use((req, _res, next) => {
        // A stand-in session: this test is about routing, not sessions.
        (req as unknown as { session: object }).session = {};
        next();
      });
      app.use(router);
      app.get('/app', (_req, res) => void res.json({ app: true }));
      app.use(appErrorHandler);
      listener.handle(app);
      const extra = await fetch(`${listener.url}/extra`);
      expect(await extra.json()).toEqual({ extra: true, authenticated: false });
      expect(await (await fetch(`${listener.url}/app`)).json()).toEqual({ app: true });
      const logout = await fetch(`${listener.url}/logout`, { headers: { accept: 'application/json' } });
      expect(logout.status).toBe(405);
      const login = await fetch(`${listener.url}/login`, { redirect: 'manual', headers: { accept: 'application/json' } });
      expect({ status: login.status, body: await login.json() }).toEqual({ status: 599, body: { reachedApp: true } });
    } finally {
      await listener.close();
    }
  });
});

describe('auth() without a reachable authorization server or session', () => {
  let listener: Listener;
  let bare: Listener;
  beforeAll(async () => {
    listener = await listen();
    const app = stackLikeApp(listener.url);
    listener.handle(app);
    bare = await listen();
    const noSession = express();
    noSession.use(auth({ issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's', redirectUri: `${bare.url}/callback`, allowInsecureRequests: true }));
    noSession.use(appErrorHandler);
    bare.handle(noSession);
  });
  afterAll(async () => {
    await listener.close();
    await bare.close();
  });

  function stackLikeApp(url: string): Express {
    const app = express();
    app.use(standInSession);
    app.use(auth({ issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's', redirectUri: `${url}/callback`, allowInsecureRequests: true, httpTimeout: 1000 }));
    app.use(appErrorHandler);
    return app;
  }

  test('a failing login route (discovery unreachable) is a clean 5xx from the library, not the app handler', async () => {
    const response = await fetch(`${listener.url}/login`, { redirect: 'manual', headers: { accept: 'application/json' } });
    const body = (await response.json()) as Record<string, unknown>;

    expect(response.status).toBeGreaterThanOrEqual(500);
    expect(response.status).toBeLessThan(599);
    // Which of the two codes depends on server.ts's classification (under jest's VM realm `instanceof TypeError`
    // does not see fetch's TypeError); what matters here is that auth() rendered it.
    expect(['idp_unreachable', 'discovery_failed']).toContain(body.error);
  });

  test('without express-session every request gets session_missing (500) from the library', async () => {
    const response = await fetch(`${bare.url}/anything`, { headers: { accept: 'application/json' } });

    expect(response.status).toBe(500);
    expect(await response.json()).toMatchObject({ error: 'session_missing' });
  });

  test('a req.session set to null (no session, as cookie-session spells it) is session_missing too, not a crash later', async () => {
    const app = express();
    app.use((req, _res, next) => {
      (req as unknown as { session: null }).session = null;
      next();
    });
    const nulled = await listen();
    try {
      app.use(auth({ issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's', redirectUri: `${nulled.url}/callback`, allowInsecureRequests: true, onError: () => undefined }));
      app.get('/anything', (req, res) => void res.json({ authenticated: req.auth.isAuthenticated }));
      app.use(appErrorHandler);
      nulled.handle(app);
      const response = await fetch(`${nulled.url}/anything`, { headers: { accept: 'application/json' } });

      expect(response.status).toBe(500);
      expect(await response.json()).toMatchObject({ error: 'session_missing' });
    } finally {
      await nulled.close();
    }
  });
});

describe('onError: the errors the library answers for itself', () => {
  let listener: Listener;
  const reported: Array<{ code: string; status: number; path: string }> = [];
  beforeAll(async () => {
    listener = await listen();
    const app = express();
    app.use(standInSession);
    const options = { issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's', allowInsecureRequests: true, httpTimeout: 1000 } as const;
    // Two instances: one with the default (logging), one with a hook, on routes of their own.
    app.use(auth({ ...options, redirectUri: `${listener.url}/callback`, routes: { login: '/login-default' } }));
    app.use(
      auth({
        ...options,
        redirectUri: `${listener.url}/callback-hooked`,
        routes: { login: '/login-hooked', logout: '/logout-hooked' },
        onError: (err, req) => {
          reported.push({ code: err.code, status: err.status, path: req.path });
          // A broken logger: throws for some errors, returns a rejected promise for others (an async hook).
          if (err.status >= 500) throw new Error('a broken logger');
          return Promise.reject(new Error('a logger that is down')) as unknown as void;
        },
      }),
    );
    app.use(appErrorHandler);
    listener.handle(app);
  });
  afterAll(async () => listener.close());

  const get = async (path: string) => {
    const response = await fetch(`${listener.url}${path}`, { redirect: 'manual', headers: { accept: 'application/json' } });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };

  test('by default a 5xx is logged in one line (method, path without the query, code, status, message); a 4xx is not', async () => {
    const output = captureOutput();
    let failed, refused;
    try {
      failed = await get('/login-default?returnTo=/secret-page');
      refused = await get('/callback?code=not-logged&state=');
    } finally {
      output.restore();
    }
    expect(failed.status).toBeGreaterThanOrEqual(500);
    expect(refused.status).toBe(400);
    const lines = output.text().split('\n').filter((line) => line.includes('express-oauth-pkce:'));
    expect(lines).toEqual([`express-oauth-pkce: GET /login-default: ${String(failed.body.error)} (${failed.status}): ${String(failed.body.error_description)}`]);
    expect(output.text()).not.toContain('secret-page');
    expect(output.text()).not.toContain('not-logged');
  });

  test('a hook gets every error the library answers, 4xx included; one that throws or rejects does not change the answer', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const failed = await get('/login-hooked');
    const refused = await get('/callback-hooked?code=x');
    const wrongMethod = await get('/logout-hooked');

    expect([failed.status >= 500, refused.status, wrongMethod.status]).toEqual([true, 400, 405]);
    expect(reported).toEqual([
      { code: failed.body.error, status: failed.status, path: '/login-hooked' },
      { code: 'invalid_state', status: 400, path: '/callback-hooked' },
      { code: 'method_not_allowed', status: 405, path: '/logout-hooked' },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 50));
    process.off('unhandledRejection', onUnhandled);
    expect(unhandled).toEqual([]);
  });
});

describe('auth() mounted under a path', () => {
  let listener: Listener;
  beforeAll(async () => {
    listener = await listen();
    const app = express();
    app.use(standInSession);
    // A common first attempt: the routes would then be /auth/login and /auth/callback.
    app.use('/auth', auth({ issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's', redirectUri: `${listener.url}/auth/callback`, allowInsecureRequests: true }));
    app.use(appErrorHandler);
    listener.handle(app);
  });
  afterAll(async () => listener.close());

  test.each(['/auth/login', '/auth/callback?code=x&state=y', '/auth/anything'])('GET %s is refused at once with 500 misconfigured, naming the fix', async (path) => {
    const response = await fetch(`${listener.url}${path}`, { redirect: 'manual', headers: { accept: 'application/json' } });
    const body = (await response.json()) as Record<string, unknown>;

    expect(response.status).toBe(500);
    expect(body).toMatchObject({ error: 'misconfigured' });
    expect(body.error_description).toContain('mounted under "/auth"');
    expect(body.error_description).toContain('app.use(auth({ ... }))');
  });

  // 500 is the lowest status the default onError logs: a misconfiguration is the app's to fix, and only the log says so.
  test('the default onError logs a 500 misconfigured', async () => {
    const output = captureOutput();
    let response;
    try {
      response = await fetch(`${listener.url}/auth/login`, { redirect: 'manual', headers: { accept: 'application/json' } });
      await response.arrayBuffer();
    } finally {
      output.restore();
    }
    expect(response.status).toBe(500);
    const lines = output.text().split('\n').filter((line) => line.includes('express-oauth-pkce:'));
    expect(lines).toEqual([expect.stringMatching(/^express-oauth-pkce: GET \/auth\/login: misconfigured \(500\): .*mounted under "\/auth"/)]);
  });

  test('a mount path with a parameter reflects the request in the message: the error page escapes it', async () => {
    const tenant = await listen();
    try {
      const app = express();
      app.use(standInSession);
      app.use('/:tenant', auth({ issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's', redirectUri: `${tenant.url}/t/callback`, allowInsecureRequests: true, onError: () => undefined }));
      tenant.handle(app);
      // Browsers percent-encode markup in a URL; other clients need not, and Node takes it as sent.
      const { hostname, port } = new URL(tenant.url);
      const page = await new Promise<string>((resolve, reject) => {
        const request = httpRequest({ host: hostname, port, path: '/<script>alert(1)<%2Fscript>/login', headers: { accept: 'text/html' } }, (response) => {
          let body = '';
          response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
          response.on('end', () => resolve(body));
        });
        request.on('error', reject);
        request.end();
      });

      expect(page).toContain('mounted under &quot;/&lt;script&gt;alert(1)&lt;%2Fscript&gt;&quot;');
      expect(page).not.toContain('<script>');
    } finally {
      await tenant.close();
    }
  });

  test('the default log line names the path as requested, prefix included', async () => {
    const output = captureOutput();
    try {
      expect((await fetch(`${listener.url}/auth/login?returnTo=/x`, { redirect: 'manual' })).status).toBe(500);
    } finally {
      output.restore();
    }
    expect(output.text()).toContain('express-oauth-pkce: GET /auth/login: misconfigured (500)');
  });
});

describe('requireAuth(check)', () => {
  test.each([
    ['sync-true', 200],
    ['async-true', 200],
    ['sync-false', 403],
    ['async-false', 403],
    ['thenable-false', 403],
  ])('%s → %i', async (name, status) => {
    const response = await get(`/check/${name}`);

    expect(response.status).toBe(status);
    if (status === 200) expect(response.body).toEqual({ passed: name });
    else expect(response.body).toMatchObject({ error: 'forbidden' });
  });

  test.each(['sync-throws', 'async-throws'])('a check that fails (%s) never lets the request through: it reaches the app error handler', async (name) => {
    const response = await get(`/check/${name}`);

    expect(response.status).toBe(599);
    expect(response.body).toEqual({ reachedApp: true });
  });

  test('without a login the check is not consulted: 401 for API clients', async () => {
    const response = await get('/check/sync-true', { cookie: '' });

    expect(response.status).toBe(401);
    expect(response.body).toMatchObject({ error: 'unauthorized' });
  });
});

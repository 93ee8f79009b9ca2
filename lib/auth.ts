import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { RequestAuth } from './context.js';
import { AuthError, AuthErrorCode } from './errors.js';
import { resolveOptions, type AuthOptions } from './options.js';
import { reportError, sendError } from './respond.js';
import { callbackRoute } from './routes/callback.js';
import { loginRoute } from './routes/login.js';
import { createLogoutTokenVerifier } from './logout-token.js';
import { backchannelLogoutRoute, backchannelMethodNotAllowed } from './routes/backchannel-logout.js';
import { logoutMethodNotAllowed, logoutRoute } from './routes/logout.js';
import { postLogoutRoute } from './routes/post-logout.js';
import { createRuntime } from './runtime.js';
import { createSaveCheck } from './save-check.js';
import { requireSession } from './session.js';
import { checkSessionCookie, uninitializedSessionProbe } from './warnings.js';

function mountedUnderPath(baseUrl: string): AuthError {
  return new AuthError(
    AuthErrorCode.MISCONFIGURED,
    500,
    `auth() is mounted under "${baseUrl}" (by app.use('${baseUrl}', …), or inside a router or sub-app mounted there); mount it on the top-level app, at its root, after express-session: app.use(auth({ ... })). Its routes are full paths, set with the routes option and redirectUri.`,
  );
}

/**
 * Creates the login router. Mount it at the app root (`app.use(auth(…))`, not `app.use('/path', auth(…))`, nor in a
 * sub-app mounted under a path: every request under such a mount gets 500 `misconfigured`), after express-session.
 *
 * Routes: `GET /login`, `GET <path of redirectUri>`, `POST /logout`; with `idpLogout`, `GET /logout/callback`; with
 * `redis` and an `openid` scope, `POST /backchannel-logout`. Every request gets `req.auth`.
 * Options are validated here, once: a mistake throws a `TypeError` at startup. An insecure express-session setup
 * (`saveUninitialized: true`; in production a cookie without `Secure`, or the MemoryStore; …) is reported once per
 * process through `process.emitWarning` (type `ExpressOAuthPkceWarning`) as soon as requests show it.
 * The session store `req.sessionStore` names gets its `set` wrapped at the first request (once per store): each write
 * of a session holding a login is followed by one token-store read, and a session a logout destroyed meanwhile is
 * destroyed again (README, "Requests in flight").
 *
 * @example
 * ```ts
 * import session from 'express-session';
 * import { RedisStore } from 'connect-redis';
 * import { Redis } from 'ioredis';
 * import { auth, requireAuth } from 'express-oauth-pkce';
 *
 * const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { commandTimeout: 2000 });
 * app.use(session({
 *   store: new RedisStore({ client: redis }), secret, resave: false, saveUninitialized: false,
 *   cookie: { secure: 'auto', sameSite: 'lax', httpOnly: true },
 * }));
 * app.use(auth({ issuer: 'https://idp.example.com', clientId: 'app', clientSecret, redirectUri: 'https://app.example.com/callback', redis }));
 * app.get('/me', requireAuth(), (req, res) => res.json(req.auth.claims));
 * ```
 */
export function auth(options: AuthOptions): Router {
  const config = resolveOptions(options);
  const runtime = createRuntime(config);
  const login = loginRoute(runtime);
  const callback = callbackRoute(runtime);
  const logout = logoutRoute(runtime);
  const postLogout = postLogoutRoute(runtime);
  const backchannel =
    runtime.sessionIndex === undefined
      ? undefined
      : backchannelLogoutRoute(runtime, runtime.sessionIndex, createLogoutTokenVerifier(config, runtime.server, runtime.keys));
  const probeSession = uninitializedSessionProbe();
  const checkSavesOf = createSaveCheck(runtime.tokenStore);

  // AuthErrors become clean 4xx/5xx answers here; anything else goes on to the app's error handling.
  function renderAuthError(err: unknown, req: Request, res: Response, next: NextFunction): void {
    if (!(err instanceof AuthError) || res.headersSent) {
      next(err);
      return;
    }
    reportError(config.onError, err, req);
    sendError(req, res, err);
  }

  function run(
    route: (req: Request, res: Response, next: NextFunction) => void | Promise<void>,
    req: Request,
    res: Response,
    next: NextFunction,
  ): void {
    const fail = (err: unknown) => renderAuthError(err, req, res, next);
    // As inside the former router: `next()` (and 'route'/'router') go on with the app, an error is rendered here.
    const routeNext: NextFunction = (err?: unknown) => (err === undefined || err === 'route' || err === 'router' ? next() : fail(err));
    try {
      const pending = route(req, res, routeNext);
      if (pending !== undefined) pending.catch(fail);
    } catch (err) {
      fail(err);
    }
  }

  // Exact path matches, never Express patterns: the configured paths are not interpreted.
  function authenticate(req: Request, res: Response, next: NextFunction): void {
    if (req.baseUrl !== '') {
      // Under a mount path, req.path loses the prefix that redirectUri and the routes carry: the callback would be a 404
      // after the user signed in, and requireAuth() elsewhere would find no req.auth. Refused on every request.
      renderAuthError(mountedUnderPath(req.baseUrl), req, res, next);
      return;
    }
    const path = req.path;
    if (!path.startsWith('/')) {
      // A request target that names no path: asterisk-form (`OPTIONS *`, RFC 9112 §3.2.4; Node lets any method have
      // it), or absolute-form with a host the URL parser folds into the path (`http://%zz/login` gives `%zz/login`).
      // None of the routes, and express-session, whose cookie path cannot match it, gives it no session. An anonymous
      // request for the app (a 404 or its own answer), not a missing express-session: that 500 let anyone fill the logs.
      req.auth = new RequestAuth(req, runtime);
      next();
      return;
    }
    try {
      requireSession(req);
    } catch (err) {
      renderAuthError(err, req, res, next);
      return;
    }
    checkSavesOf(req.sessionStore);
    req.auth = new RequestAuth(req, runtime);
    if (path === config.callbackPath) {
      if (req.method === 'GET') return run(callback, req, res, next);
    } else if (path === config.loginPath) {
      if (req.method === 'GET') {
        checkSessionCookie(req);
        return run(login, req, res, next);
      }
    } else if (path === config.logoutPath) {
      return run(req.method === 'POST' ? logout : logoutMethodNotAllowed, req, res, next);
    } else if (path === config.postLogoutPath) {
      if (req.method === 'GET') return run(postLogout, req, res, next);
    } else if (backchannel !== undefined && path === config.backchannelLogoutPath) {
      return run(req.method === 'POST' ? backchannel : backchannelMethodNotAllowed, req, res, next);
    }
    probeSession(req, res);
    next();
  }

  // Every request of the app passes through this router. A Router's own dispatch (layer matching, next(),
  // trimPrefix…) cost more per request than all of the library's work (bench/FIXES.md), so the router's entry point
  // is the dispatch above. It stays a real Router: routes an app adds to it still run, through Express's own handle.
  // (@types/express does not declare `handle`, which the router package calls on every request.)
  const router = express.Router() as Router & { handle: (req: Request, res: Response, out: NextFunction) => void };
  const expressHandle = router.handle;
  router.handle = function handle(req, res, out) {
    if (router.stack.length === 0) return authenticate(req, res, out);
    authenticate(req, res, (err?: unknown) => (err === undefined ? expressHandle.call(router, req, res, out) : out(err)));
  };
  return router;
}

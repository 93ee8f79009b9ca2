import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { RequestAuth } from './context.js';
import { AuthError } from './errors.js';
import { resolveOptions, type AuthOptions } from './options.js';
import { sendError } from './respond.js';
import { callbackRoute } from './routes/callback.js';
import { loginRoute } from './routes/login.js';
import { createLogoutTokenVerifier } from './logout-token.js';
import { backchannelLogoutRoute, backchannelMethodNotAllowed } from './routes/backchannel-logout.js';
import { logoutMethodNotAllowed, logoutRoute } from './routes/logout.js';
import { postLogoutRoute } from './routes/post-logout.js';
import { createRuntime } from './runtime.js';
import { requireSession } from './session.js';

/**
 * Creates the login router. Mount it at the app root, after express-session.
 *
 * Routes: `GET /login`, `GET <path of redirectUri>`, `POST /logout`; with `idpLogout`, `GET /logout/callback`; with
 * `redis`, `POST /backchannel-logout`. Every request gets `req.auth`.
 * Options are validated here, once: a mistake throws a `TypeError` at startup.
 *
 * @example
 * ```ts
 * import session from 'express-session';
 * import { RedisStore } from 'connect-redis';
 * import { Redis } from 'ioredis';
 * import { auth, requireAuth } from 'express-oauth-pkce';
 *
 * const redis = new Redis(process.env.REDIS_URL);
 * app.use(session({ store: new RedisStore({ client: redis }), secret, resave: false, saveUninitialized: false }));
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
      : backchannelLogoutRoute(runtime, runtime.sessionIndex, createLogoutTokenVerifier(config, runtime.server));
  const router = express.Router();

  // One middleware with exact path matches instead of three routes: cheaper on every request, and the
  // configured paths are never interpreted as route patterns.
  router.use(function authenticate(req: Request, res: Response, next: NextFunction) {
    try {
      requireSession(req);
    } catch (err) {
      next(err);
      return;
    }
    req.auth = new RequestAuth(req, runtime);
    const path = req.path;
    if (path === config.callbackPath) {
      if (req.method === 'GET') return callback(req, res, next);
    } else if (path === config.loginPath) {
      if (req.method === 'GET') return login(req, res, next);
    } else if (path === config.logoutPath) {
      return req.method === 'POST' ? logout(req, res, next) : logoutMethodNotAllowed(req, res, next);
    } else if (path === config.postLogoutPath) {
      if (req.method === 'GET') return postLogout(req, res, next);
    } else if (backchannel !== undefined && path === config.backchannelLogoutPath) {
      return req.method === 'POST' ? backchannel(req, res, next) : backchannelMethodNotAllowed(req, res, next);
    }
    next();
  });

  router.use(function renderAuthError(err: unknown, req: Request, res: Response, next: NextFunction) {
    if (!(err instanceof AuthError) || res.headersSent) {
      next(err);
      return;
    }
    sendError(req, res, err);
  });

  return router;
}

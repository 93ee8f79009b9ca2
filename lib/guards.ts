import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { RequestAuth, type IdTokenClaims } from './context.js';
import { AuthError, AuthErrorCode } from './errors.js';
import { MAX_QUERY_LENGTH } from './query.js';
import { isThenable, prefersHtml, sendError } from './respond.js';
import { MAX_RETURN_TO_LENGTH } from './return-to.js';

/**
 * The login route, with the page to come back to. A URL too long to be kept as `returnTo` is left out: sent along, it
 * would either be dropped by the login route or, past the query limit, make the login itself fail (400).
 */
function loginUrl(loginPath: string, originalUrl: string): string {
  const returnTo = `returnTo=${encodeURIComponent(originalUrl)}`;
  return originalUrl.length > MAX_RETURN_TO_LENGTH || returnTo.length > MAX_QUERY_LENGTH ? loginPath : `${loginPath}?${returnTo}`;
}

/**
 * A predicate a logged-in user must satisfy (roles, groups, a verified email…).
 *
 * @example
 * ```ts
 * const isAdmin: AuthCheck = (claims) => Array.isArray(claims?.groups) && claims.groups.includes('admin');
 * app.get('/admin', requireAuth(isAdmin), adminPage);
 * ```
 */
export type AuthCheck = (claims: IdTokenClaims | undefined, req: Request) => boolean | Promise<boolean>;

/**
 * Guards a route. A logged-in request passes. Otherwise a browser `GET` or `HEAD` (one that prefers `text/html`) is
 * redirected (302) to the login route with `returnTo` set to the original URL, and any other request gets 401
 * `unauthorized` (JSON `{ error, error_description, status }`, or the HTML error page when it prefers `text/html`).
 * With `check`, a logged-in user who fails it gets 403 `forbidden`, never a login loop.
 *
 * @example
 * ```ts
 * app.get('/profile', requireAuth(), (req, res) => res.render('profile', { user: req.auth.claims }));
 * app.get('/admin', requireAuth((claims) => Array.isArray(claims?.groups) && claims.groups.includes('admin')), adminPage);
 * ```
 */
export function requireAuth(check?: AuthCheck): RequestHandler {
  if (check !== undefined && typeof check !== 'function') {
    throw new TypeError('express-oauth-pkce: requireAuth(check) takes a function (claims, req) => boolean | Promise<boolean>.');
  }
  // Synchronous unless the check is asynchronous: this runs on every guarded request, and a promise per request
  // is measurable there (bench/FIXES.md).
  return function requireAuthentication(req: Request, res: Response, next: NextFunction): void {
    const context = (req as { auth?: unknown }).auth;
    if (!(context instanceof RequestAuth)) {
      next(new AuthError(AuthErrorCode.MISCONFIGURED, 500, 'requireAuth() found no req.auth: mount auth({ ... }) at the root of the app (app.use(auth({ ... })), not under a path), before the routes it guards.'));
      return;
    }
    if (!context.isAuthenticated) {
      if ((req.method === 'GET' || req.method === 'HEAD') && prefersHtml(req)) {
        res.set('Cache-Control', 'no-store');
        res.redirect(302, loginUrl(RequestAuth.runtimeOf(context).config.loginPath, req.originalUrl));
        return;
      }
      sendError(req, res, new AuthError(AuthErrorCode.UNAUTHORIZED, 401, 'Log in to use this resource.'));
      return;
    }
    if (check === undefined) {
      next();
      return;
    }
    const decide = (allowed: unknown) => {
      if (allowed) next();
      else sendError(req, res, new AuthError(AuthErrorCode.FORBIDDEN, 403, 'You are logged in but not allowed to use this resource.'));
    };
    const verdict: unknown = check(context.claims, req);
    // Any thenable is awaited, never taken as a truthy "allowed".
    if (isThenable(verdict)) Promise.resolve(verdict).then(decide, next);
    else decide(verdict);
  };
}

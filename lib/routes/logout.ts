import type { NextFunction, Request, Response } from 'express';
import { AuthError, AuthErrorCode } from '../errors.js';
import { setNoStore } from '../respond.js';
import type { Runtime } from '../runtime.js';
import { destroySession, readState, requireSession } from '../session.js';

/** Cross-site requests may not end a login (logout CSRF): the Fetch Metadata and Origin headers tell. */
export function isCrossSite(req: Request, appOrigin: string): boolean {
  if (req.get('sec-fetch-site') === 'cross-site') return true;
  const origin = req.get('origin');
  return origin !== undefined && origin !== appOrigin;
}

/** `POST /logout`: ends the login and destroys the session. */
export function logoutRoute(runtime: Runtime) {
  const appOrigin = runtime.config.redirectUri.origin;
  return async function logout(req: Request, res: Response, _next: NextFunction): Promise<void> {
    setNoStore(res);
    if (isCrossSite(req, appOrigin)) {
      throw new AuthError(AuthErrorCode.FORBIDDEN, 403, 'Cross-site logout requests are refused.');
    }
    const session = requireSession(req);
    const login = readState(req)?.login;
    // The login's token-store entry goes with its session.
    if (login !== undefined) await runtime.tokenStore.remove(login.id);
    await destroySession(session);
    res.redirect(303, '/');
  };
}

/** Any other method on the logout route: logging out by `GET` would let any page log the user out. */
export function logoutMethodNotAllowed(_req: Request, res: Response, next: NextFunction): void {
  res.set('Allow', 'POST');
  next(new AuthError(AuthErrorCode.METHOD_NOT_ALLOWED, 405, 'Log out with POST (a form button), not by opening a link.'));
}

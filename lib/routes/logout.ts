import type { NextFunction, Request, Response } from 'express';
import * as client from 'openid-client';
import { AuthError, AuthErrorCode } from '../errors.js';
import type { ResolvedConfig } from '../options.js';
import { setNoStore } from '../respond.js';
import { revokeUnused } from '../revocation.js';
import type { Runtime } from '../runtime.js';
import { subjectOf } from '../session-index.js';
import { destroySession, readState, regenerateSession, requireSession, saveSession, writableState, type LoginState, type SessionWithState } from '../session.js';
import { newestTokens, sessionTtlSeconds } from '../token-store.js';
import { unpackTokens, type StoredTokens } from '../tokens.js';

/** How long the `state` of an RP-initiated logout waits for the browser to come back. */
export const LOGOUT_STATE_TTL_MS = 10 * 60 * 1000;

/**
 * Cross-site requests may not end a login (logout CSRF). Fetch Metadata decides when the browser sends it: a page with
 * `Referrer-Policy: no-referrer` (helmet's default) makes Chromium send `Origin: null` on its own same-origin form
 * posts, so `same-origin` must win over Origin. `same-site` (a sibling subdomain) still has to pass the Origin check.
 */
export function isCrossSite(req: Request, appOrigin: string): boolean {
  const site = req.get('sec-fetch-site');
  if (site === 'cross-site') return true;
  if (site === 'same-origin' || site === 'none') return false;
  const origin = req.get('origin');
  return origin !== undefined && origin !== appOrigin;
}

/** The attributes the session cookie was set with; a cookie is only cleared by a Set-Cookie with the same path and domain. */
type CookieAttributes = Pick<SessionWithState['cookie'], 'path' | 'domain' | 'secure' | 'httpOnly' | 'sameSite'>;

function cookieAttributes(session: SessionWithState): CookieAttributes {
  const { path, domain, secure, httpOnly, sameSite } = session.cookie;
  return { path, domain, secure, httpOnly, sameSite };
}

/** Destroys the session in the store and tells the browser to drop its cookie. */
export async function endSession(res: Response, config: ResolvedConfig, session: SessionWithState): Promise<void> {
  const attributes = cookieAttributes(session);
  await destroySession(session);
  clearSessionCookie(res, config, attributes);
}

/** Tells the browser to drop the session cookie, with the attributes it was set with. */
function clearSessionCookie(res: Response, config: ResolvedConfig, attributes: ReturnType<typeof cookieAttributes>): void {
  res.clearCookie(config.sessionCookieName, {
    ...(attributes.path === undefined ? {} : { path: attributes.path }),
    ...(attributes.domain === undefined ? {} : { domain: attributes.domain }),
    // express-session resolves `secure: 'auto'` per request into the session's cookie.
    secure: attributes.secure === true,
    httpOnly: attributes.httpOnly !== false,
    ...(attributes.sameSite === undefined ? {} : { sameSite: attributes.sameSite }),
  });
}

async function serverOrNothing(runtime: Runtime): Promise<client.Configuration | undefined> {
  try {
    return await runtime.server();
  } catch {
    // The server is unreachable: the local logout still happens, only revocation and RP-initiated logout are skipped.
    return undefined;
  }
}

/** Where an RP-initiated logout sends the browser, and the one-time `state` its return must bring back. */
interface EndSessionRequest {
  url: string;
  state: string;
}

/**
 * The end-session URL for this logout with a fresh one-time `state` (RP-Initiated Logout 1.0 §2), built before anything
 * of the session changes. Undefined when the server has no end-session endpoint the library can use: none, or one
 * openid-client refuses (not a URL, or `http:` without `allowInsecureRequests`); the logout is then local only.
 */
function endSessionRequest(runtime: Runtime, configuration: client.Configuration, tokens: StoredTokens | undefined): EndSessionRequest | undefined {
  if (typeof configuration.serverMetadata().end_session_endpoint !== 'string') return undefined;
  const state = client.randomState();
  const parameters: Record<string, string> = {
    post_logout_redirect_uri: `${runtime.config.redirectUri.origin}${runtime.config.postLogoutPath ?? '/'}`,
    state,
  };
  if (tokens?.idToken !== undefined) parameters.id_token_hint = tokens.idToken;
  try {
    return { url: client.buildEndSessionUrl(configuration, parameters).href, state };
  } catch {
    return undefined;
  }
}

/**
 * Replaces the logged-in session by a fresh one (new id) that holds only the one-time `state` of this logout. A failure
 * to destroy the logged-in one leaves it as it was, the browser's session still (and throws). A failure to save the fresh one comes after the
 * logged-in session is gone: it is returned, not thrown, so that the caller still finishes the local logout.
 */
async function replaceSession(req: Request, res: Response, config: ResolvedConfig, state: string): Promise<AuthError | undefined> {
  let session: SessionWithState;
  try {
    session = await regenerateSession(req);
  } catch (err) {
    // express-session generates the fresh session even when the logged-in one could not be destroyed, and would give
    // the browser its cookie: drop it, so that the browser keeps its session, alive (and findable by back-channel
    // logout) as after any failed POST /logout, and the user can try again.
    delete (req as { session?: unknown }).session;
    throw err;
  }
  writableState(session).logout = { state, createdAt: Date.now() };
  try {
    await saveSession(session);
    return undefined;
  } catch (err) {
    // Nothing to come back to: drop the fresh session too (best effort; the store is failing), and the browser's cookie
    // whatever the store says: the logged-in session it named is gone.
    const attributes = cookieAttributes(session);
    await destroySession(session).catch(() => undefined);
    clearSessionCookie(res, config, attributes);
    return new AuthError(
      AuthErrorCode.SESSION_UNAVAILABLE,
      503,
      'The session store failed: you are logged out of this app, but the logout at the authorization server could not be started.',
      { cause: err instanceof AuthError ? err.cause : err },
    );
  }
}

/**
 * The login's newest tokens, and its token-store entry ended (a tombstone for as long as the session could still be
 * saved back by a request in flight); Redis trouble must not block the logout.
 */
async function currentTokens(runtime: Runtime, req: Request, login: LoginState): Promise<StoredTokens | undefined> {
  try {
    const entry = await runtime.tokenStore.end(login.id, sessionTtlSeconds(req));
    // The store's set is the whole one (the session copy has no raw ID token).
    return newestTokens(entry, login);
  } catch {
    return unpackTokens(login.tokens);
  }
}

/**
 * `POST /logout`: same-origin only. Ends the login in the token store, destroys the session and clears its cookie,
 * removes the session from the back-channel index, revokes the tokens (best effort), then redirects 303 to
 * `postLogoutRedirect` — or, with `idpLogout`, to the server's end-session endpoint.
 */
export function logoutRoute(runtime: Runtime) {
  const { config } = runtime;
  const appOrigin = config.redirectUri.origin;
  return async function logout(req: Request, res: Response, _next: NextFunction): Promise<void> {
    setNoStore(res);
    if (isCrossSite(req, appOrigin)) {
      throw new AuthError(AuthErrorCode.FORBIDDEN, 403, 'Cross-site logout requests are refused.');
    }
    const session = requireSession(req);
    const sessionId = session.id;
    const login = readState(req)?.login;
    // The token store holds the newest tokens (the session copy may be an older version); its entry ends with the login.
    const tokens = login === undefined ? undefined : await currentTokens(runtime, req, login);

    const configuration = login === undefined ? undefined : await serverOrNothing(runtime);
    const endSessionAt = config.idpLogout && login !== undefined && configuration !== undefined ? endSessionRequest(runtime, configuration, tokens) : undefined;
    let target = config.postLogoutRedirect;
    let failure: AuthError | undefined;
    if (endSessionAt !== undefined) {
      failure = await replaceSession(req, res, config, endSessionAt.state);
      if (failure === undefined) target = endSessionAt.url;
    } else {
      await endSession(res, config, session);
    }
    if (login !== undefined && runtime.sessionIndex !== undefined) {
      // Only once the session is gone: while it may still exist, a back-channel logout must be able to find it. A stale
      // entry left by a failure here names a session that no longer exists, and must not fail the logout.
      await runtime.sessionIndex.remove(sessionId, subjectOf(login.claims)).catch(() => undefined);
    }

    if (tokens !== undefined && configuration !== undefined) {
      // After the local logout on purpose: a slow or failing revocation cannot leave the session alive.
      await revokeUnused(configuration, tokens);
    }
    // Reported only now: the logged-in session is gone, so the rest of the local logout had to happen first.
    if (failure !== undefined) throw failure;
    res.redirect(303, target);
  };
}

/** Any other method on the logout route: logging out by `GET` would let any page log the user out. */
export function logoutMethodNotAllowed(_req: Request, res: Response, next: NextFunction): void {
  res.set('Allow', 'POST');
  next(new AuthError(AuthErrorCode.METHOD_NOT_ALLOWED, 405, 'Log out with POST (a form button), not by opening a link.'));
}

import type { Request, Response } from 'express';

/**
 * Warnings about an insecure express-session setup. express-session does not expose its options, so the library
 * reads what each request shows: the session cookie's attributes, the store's class, and whether a session nobody
 * touched got a cookie anyway. Each warning goes through `process.emitWarning` (type {@link WARNING_TYPE}, a stable
 * `code`) at most once per process: visible by default on stderr, filterable with `process.on('warning')`, and
 * silenced with `node --disable-warning=<code>`. Nothing here ever includes a cookie value or a session id.
 */
export const WARNING_TYPE = 'ExpressOAuthPkceWarning';

/** The warning codes (documented in the README). */
export const WarningCode = {
  SAVE_UNINITIALIZED: 'EXPRESS_OAUTH_PKCE_SAVE_UNINITIALIZED',
  COOKIE_NOT_SECURE: 'EXPRESS_OAUTH_PKCE_COOKIE_NOT_SECURE',
  MEMORY_STORE: 'EXPRESS_OAUTH_PKCE_MEMORY_STORE',
  COOKIE_NOT_HTTPONLY: 'EXPRESS_OAUTH_PKCE_COOKIE_NOT_HTTPONLY',
  COOKIE_SAMESITE: 'EXPRESS_OAUTH_PKCE_COOKIE_SAMESITE',
  INSECURE_REQUESTS: 'EXPRESS_OAUTH_PKCE_INSECURE_REQUESTS',
  STORE_NOT_CHECKED: 'EXPRESS_OAUTH_PKCE_STORE_NOT_CHECKED',
} as const;

const RECOMMENDED = "cookie: { secure: 'auto', sameSite: 'lax', httpOnly: true }";

// Once per process, whatever the number of auth() instances: the point is to be seen, not to flood logs.
const emitted = new Set<string>();

/** Emits one warning, at most once per process for each `code` and `variant`. @internal */
export function warn(code: string, message: string, variant = ''): void {
  const key = `${code}:${variant}`;
  if (emitted.has(key)) return;
  emitted.add(key);
  process.emitWarning(`express-oauth-pkce: ${message}`, { type: WARNING_TYPE, code });
}

interface SessionCookieView {
  secure?: boolean | 'auto';
  httpOnly?: boolean;
  /** In any case: express-session's cookie serialiser lowercases it (`'None'` sends `SameSite=None`). */
  sameSite?: boolean | string;
}

interface SessionRequest {
  sessionID?: string;
  sessionStore?: object;
  session?: { cookie?: SessionCookieView } & Record<string, unknown>;
}

function isProduction(req: Request): boolean {
  // Express reads NODE_ENV into app.get('env') when the app is created (and lets the app override it).
  const env: unknown = typeof req.app?.get === 'function' ? req.app.get('env') : process.env.NODE_ENV;
  return env === 'production';
}

/**
 * Checks the cookie attributes and the store. Run on login-route requests: that is where the session cookie starts
 * to matter, and a login request comes from a browser (not from a health check over plain HTTP behind the proxy).
 */
export function checkSessionCookie(req: Request): void {
  const { session, sessionStore } = req as unknown as SessionRequest;
  const cookie = session?.cookie;
  if (cookie === undefined) return;
  const production = isProduction(req);

  // As the cookie carries it: express-session takes `httpOnly: undefined` written out over its default, and sends no HttpOnly.
  if (!cookie.httpOnly) {
    warn(WarningCode.COOKIE_NOT_HTTPONLY, `the session cookie is sent without HttpOnly (httpOnly: false, or undefined), so any injected script can read it and take over logins. Use ${RECOMMENDED}.`);
  }
  // Compared as the cookie carries it: `sameSite: 'None'` is `SameSite=None` all the same.
  const sameSite = cookie.sameSite === true ? 'strict' : typeof cookie.sameSite === 'string' ? cookie.sameSite.toLowerCase() : cookie.sameSite;
  if (sameSite === 'none') {
    warn(WarningCode.COOKIE_SAMESITE, `the session cookie has SameSite=None, so other sites can send requests that carry the session (CSRF). Use ${RECOMMENDED}.`, 'none');
  } else if (sameSite === 'strict') {
    warn(
      WarningCode.COOKIE_SAMESITE,
      `the session cookie has SameSite=Strict; browsers do not send it on the redirect back from the authorization server (a cross-site navigation), so logins fail with invalid_state. Use ${RECOMMENDED}.`,
      'strict',
    );
  } else if ((sameSite === undefined || sameSite === false) && production) {
    warn(WarningCode.COOKIE_SAMESITE, `the session cookie has no SameSite attribute, and browsers disagree on the default. Use ${RECOMMENDED}.`, 'missing');
  }
  if (production && cookie.secure !== true) {
    warn(
      WarningCode.COOKIE_NOT_SECURE,
      `in production the session cookie is sent without Secure, so it can travel over plain HTTP. Use ${RECOMMENDED}, and behind a TLS-terminating proxy app.set('trust proxy', …) so that 'auto' sees HTTPS.`,
    );
  }
  if (production && sessionStore?.constructor?.name === 'MemoryStore') {
    warn(
      WarningCode.MEMORY_STORE,
      'in production express-session uses its MemoryStore: it leaks memory, forgets every login on restart and is not shared between processes. Use a real store such as connect-redis.',
    );
  }
}

/**
 * Detects `saveUninitialized: true`: a session created by a request and modified by nobody still gets a cookie.
 * Watches requests outside the library's routes (which modify the session on purpose) until one decides it; one
 * probe per `auth()` instance, since each may sit behind its own session middleware.
 */
export function uninitializedSessionProbe(): (req: Request, res: Response) => void {
  let decided = false;
  return function probe(req, res) {
    if (decided) return;
    const { sessionID, session } = req as unknown as SessionRequest;
    if (typeof sessionID !== 'string' || session === undefined) return;
    // The cookie carries the id (signed, URL-encoded: `s%3A<id>.<signature>`): absent means the session is new.
    if ((req.headers.cookie ?? '').includes(sessionID)) return;
    res.once('finish', () => {
      if (decided) return;
      const current = (req as unknown as SessionRequest).session;
      // Modified by the app (or destroyed): it would be saved either way, so this request says nothing.
      if (current === undefined || Object.keys(current).some((key) => key !== 'cookie')) return;
      decided = true;
      const setCookie = res.getHeader('set-cookie');
      const headers = Array.isArray(setCookie) ? setCookie : typeof setCookie === 'string' ? [setCookie] : [];
      if (headers.some((header) => header.includes(sessionID))) {
        warn(
          WarningCode.SAVE_UNINITIALIZED,
          'express-session has saveUninitialized: true: every visitor gets a stored session and a cookie before logging in, which fills the store and hands out session ids before login. Use saveUninitialized: false; the library saves the session itself when a login starts.',
        );
      }
    });
  };
}

/**
 * Stable error codes carried by {@link AuthError}. Match on these, never on messages.
 *
 * | code | status | meaning |
 * | --- | --- | --- |
 * | `invalid_request` | 400 | malformed, oversized or repeated parameters |
 * | `invalid_state` | 400 | callback `state` missing, unknown, expired or already used |
 * | `access_denied` | 403 | the user or the authorization server refused the authorization |
 * | `authorization_error` | 400 | any other error response from the authorization endpoint |
 * | `invalid_response` | 400 | the authorization response failed a check (`iss` per RFC 9207, …) |
 * | `invalid_id_token` | 400 | the ID token failed validation (signature, `iss`, `aud`, `nonce`, `exp`, …) |
 * | `token_exchange_failed` | 400 / 502 | the token endpoint refused the code (`invalid_grant`, …) or answered nonsense; 502 when it refused the client itself (`invalid_client`, …, or any 401) |
 * | `par_failed` | 502 | the pushed authorization request (RFC 9126) was refused (a 4xx other than 429, which is `idp_unreachable`); nothing was stored |
 * | `user_fetch_failed` | 502 | the `fetchUser` hook failed or returned no plain object; no login was stored |
 * | `resource_request_failed` | 502 / 504 | `req.auth.fetch()` could not reach the resource server, or timed out (504) |
 * | `idp_unreachable` | 502 / 504 | the authorization server could not be reached, failed (5xx), turned the request away (429), or timed out (504) |
 * | `discovery_failed` | 502 | the issuer's metadata document answered an error status (404, 5xx) or is unacceptable (wrong issuer, no S256, an endpoint the library uses missing, not a URL or not `https:`) |
 * | `session_unavailable` | 503 | the session store (Redis) failed, nobody is let in; or a back-channel logout with the same token is still at work (retry) |
 * | `session_missing` | 500 | express-session is not mounted before `auth()`, or its `cookie.path` does not cover the request |
 * | `login_required` | 401 | no usable login: not logged in, or the login has ended |
 * | `refresh_failed` | 503 / 502 | a refresh failed; the login is kept. 503: transient (network, timeout, 5xx, 429), retry later; 502: the server refused it for a reason other than a dead refresh token (`invalid_grant`, GitHub's `bad_refresh_token`), e.g. `invalid_client` or any 401 |
 * | `unauthorized` | 401 | `requireAuth()` refused an anonymous API request |
 * | `forbidden` | 403 | `requireAuth(check)` refused a logged-in user, or a cross-site request |
 * | `method_not_allowed` | 405 | e.g. `GET` on the logout route |
 * | `invalid_logout_token` | 400 | a back-channel `logout_token` failed validation (signature, `iss`, `aud`, `events`, replayed `jti`, …) |
 * | `misconfigured` | 500 | the library is used wrongly (e.g. `requireAuth()` without `auth()`, `auth()` mounted under a path) |
 */
export const AuthErrorCode = {
  INVALID_REQUEST: 'invalid_request',
  INVALID_STATE: 'invalid_state',
  ACCESS_DENIED: 'access_denied',
  AUTHORIZATION_ERROR: 'authorization_error',
  INVALID_RESPONSE: 'invalid_response',
  INVALID_ID_TOKEN: 'invalid_id_token',
  TOKEN_EXCHANGE_FAILED: 'token_exchange_failed',
  PAR_FAILED: 'par_failed',
  USER_FETCH_FAILED: 'user_fetch_failed',
  RESOURCE_REQUEST_FAILED: 'resource_request_failed',
  IDP_UNREACHABLE: 'idp_unreachable',
  DISCOVERY_FAILED: 'discovery_failed',
  SESSION_UNAVAILABLE: 'session_unavailable',
  SESSION_MISSING: 'session_missing',
  LOGIN_REQUIRED: 'login_required',
  REFRESH_FAILED: 'refresh_failed',
  UNAUTHORIZED: 'unauthorized',
  FORBIDDEN: 'forbidden',
  METHOD_NOT_ALLOWED: 'method_not_allowed',
  INVALID_LOGOUT_TOKEN: 'invalid_logout_token',
  MISCONFIGURED: 'misconfigured',
} as const;

/**
 * One of the {@link AuthErrorCode} values.
 *
 * @example
 * ```ts
 * function advice(code: AuthErrorCode): string {
 *   if (code === AuthErrorCode.LOGIN_REQUIRED) return 'Log in again.';
 *   if (code === AuthErrorCode.SESSION_UNAVAILABLE) return 'Try again in a moment.';
 *   return 'Something went wrong.';
 * }
 * ```
 */
export type AuthErrorCode = (typeof AuthErrorCode)[keyof typeof AuthErrorCode];

/**
 * Extra facts an {@link AuthError} may carry.
 *
 * @example
 * ```ts
 * const err = new AuthError(AuthErrorCode.ACCESS_DENIED, 403, 'The authorization was refused.', {
 *   error: 'access_denied',
 *   errorDescription: 'The user cancelled.',
 * });
 * err.toJSON(); // { error: 'access_denied', error_description: 'The authorization was refused.', status: 403,
 *               //   upstream_error: 'access_denied', upstream_error_description: 'The user cancelled.' }
 * ```
 */
export interface AuthErrorOptions {
  /** The underlying error. Kept for logs; never serialised by `toJSON()`. */
  cause?: unknown;
  /** The authorization server's own `error` code (RFC 6749 §4.1.2.1, §5.2), when it sent one. */
  error?: string;
  /** The authorization server's `error_description`, when it sent one. */
  errorDescription?: string;
}

/**
 * The error type of everything that goes wrong at run time: what the library's routes answer with, what `req.auth`'s
 * methods reject with, what `requireAuth()` passes to `next()`. (Startup mistakes in `auth()`/`requireAuth()` options
 * are `TypeError`s; errors that are not the library's, such as those of the app's body parser or of a `requireAuth()`
 * check, pass through unchanged.)
 *
 * `code` is stable and `status` is the HTTP status to answer with. Messages never contain tokens,
 * codes, verifiers or secrets, and `JSON.stringify(err)` gives only `code`, `status`, `message` and the
 * upstream `error`/`error_description`.
 *
 * @example
 * ```ts
 * try {
 *   const token = await req.auth.getAccessToken();
 * } catch (err) {
 *   if (err instanceof AuthError && err.code === AuthErrorCode.LOGIN_REQUIRED) return res.redirect('/login');
 *   throw err;
 * }
 * ```
 */
export class AuthError extends Error {
  override readonly name = 'AuthError';
  readonly code: AuthErrorCode;
  readonly status: number;
  readonly error: string | undefined;
  readonly errorDescription: string | undefined;

  constructor(code: AuthErrorCode, status: number, message: string, options: AuthErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = status;
    this.error = options.error;
    this.errorDescription = options.errorDescription;
  }

  /** What a client may see: no stack, no cause. */
  toJSON(): { error: AuthErrorCode; error_description: string; status: number; upstream_error?: string; upstream_error_description?: string } {
    return {
      error: this.code,
      error_description: this.message,
      status: this.status,
      ...(this.error === undefined ? {} : { upstream_error: this.error }),
      ...(this.errorDescription === undefined ? {} : { upstream_error_description: this.errorDescription }),
    };
  }
}

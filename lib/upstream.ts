import * as client from 'openid-client';
import { AuthError, AuthErrorCode } from './errors.js';

/** oauth4webapi codes that only ID-token validation raises. */
const ID_TOKEN_CODES = new Set(['OAUTH_JWT_TIMESTAMP_CHECK_FAILED', 'OAUTH_JWT_CLAIM_COMPARISON_FAILED', 'OAUTH_KEY_SELECTION_FAILED']);

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  cause?: unknown;
}

// Errors from fetch (undici) may come from another realm (jest's VM context, worker threads), where `instanceof
// TypeError` is false: walk the chain by shape instead.
function chain(err: unknown): ErrorLike[] {
  const links: ErrorLike[] = [];
  for (let e: unknown = err; typeof e === 'object' && e !== null && links.length < 5; e = (e as ErrorLike).cause) {
    links.push(e as ErrorLike);
  }
  return links;
}

function messages(err: unknown): string {
  return chain(err)
    .map((e) => `${String(e.message ?? '')} ${typeof e.code === 'string' ? e.code : ''}`)
    .join(' | ');
}

/** True for failures to reach the server at all: DNS, refused connection, reset, TLS. */
export function isNetworkError(err: unknown): boolean {
  // openid-client wraps a foreign-realm TypeError in a ClientError, so look along the whole chain.
  return chain(err).some((e) => e.name === 'TypeError' && /fetch failed|network/i.test(String(e.message)));
}

/** True when openid-client gave up waiting (the configured `httpTimeout`). */
export function isTimeout(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'OAUTH_TIMEOUT';
}

/**
 * Classifies a failure of the code exchange (token request plus ID-token validation). Upstream `error` and
 * `error_description` are kept; tokens and codes never reach the message.
 */
export function exchangeError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (isTimeout(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 504, 'The token endpoint did not answer in time.', { cause: err });
  }
  if (isNetworkError(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, 'The token endpoint could not be reached.', { cause: err });
  }
  if (err instanceof client.ResponseBodyError) {
    const upstream = { cause: err, error: err.error, ...(err.error_description ? { errorDescription: err.error_description } : {}) };
    if (err.status >= 500) {
      return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, `The token endpoint failed (HTTP ${err.status}).`, upstream);
    }
    return new AuthError(AuthErrorCode.TOKEN_EXCHANGE_FAILED, 400, `The token endpoint refused the authorization code: ${err.error}.`, upstream);
  }
  const code = (err as { code?: unknown } | null)?.code;
  const text = messages(err);
  if ((typeof code === 'string' && ID_TOKEN_CODES.has(code)) || /ID Token|JWT|JWS|signature/i.test(text)) {
    return new AuthError(AuthErrorCode.INVALID_ID_TOKEN, 400, `The ID token is invalid: ${describe(err)}.`, { cause: err });
  }
  if (code === 'OAUTH_RESPONSE_IS_NOT_CONFORM') {
    const status = (err as { cause?: { status?: unknown } }).cause?.status;
    if (typeof status === 'number' && status >= 500) {
      return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, `The token endpoint failed (HTTP ${status}).`, { cause: err });
    }
  }
  return new AuthError(AuthErrorCode.TOKEN_EXCHANGE_FAILED, 400, `The token response was refused: ${describe(err)}.`, { cause: err });
}

/** The most specific message in the chain; oauth4webapi's messages name claims and parameters, never their values. */
function describe(err: unknown): string {
  const last = chain(err)
    .map((e) => e.message)
    .filter((m): m is string => typeof m === 'string' && m !== '')
    .at(-1);
  return (last ?? 'invalid response').replace(/\.$/, '');
}

/**
 * Classifies a failure of the refresh-token grant (RFC 6749 §6). `login_required` (401) means the login is over:
 * `invalid_grant` (revoked, expired or reused refresh token; the caller re-reads the token store once before believing
 * it), or a refreshed ID token that fails validation. Anything else keeps the login: `refresh_failed`, 503 when a
 * retry may work (network, timeout, 5xx), 502 when the server refused for another reason.
 */
export function refreshError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (isTimeout(err)) {
    return new AuthError(AuthErrorCode.REFRESH_FAILED, 503, 'The token endpoint did not answer the refresh in time; try again.', { cause: err });
  }
  if (isNetworkError(err)) {
    return new AuthError(AuthErrorCode.REFRESH_FAILED, 503, 'The token endpoint could not be reached to refresh the tokens; try again.', { cause: err });
  }
  if (err instanceof client.ResponseBodyError) {
    const upstream = { cause: err, error: err.error, ...(err.error_description ? { errorDescription: err.error_description } : {}) };
    if (err.status >= 500) {
      return new AuthError(AuthErrorCode.REFRESH_FAILED, 503, `The token endpoint failed to refresh the tokens (HTTP ${err.status}); try again.`, upstream);
    }
    if (err.error === 'invalid_grant') {
      return new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'The authorization server ended this login (invalid_grant); log in again.', upstream);
    }
    return new AuthError(AuthErrorCode.REFRESH_FAILED, 502, `The token endpoint refused the refresh: ${err.error}.`, upstream);
  }
  const code = (err as { code?: unknown } | null)?.code;
  const text = messages(err);
  if ((typeof code === 'string' && ID_TOKEN_CODES.has(code)) || /ID Token|JWT|JWS|signature/i.test(text)) {
    return new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, `The refreshed ID token is invalid (${describe(err)}); log in again.`, { cause: err });
  }
  const status = (err as { cause?: { status?: unknown } }).cause?.status;
  if (code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' && typeof status === 'number' && status >= 500) {
    return new AuthError(AuthErrorCode.REFRESH_FAILED, 503, `The token endpoint failed to refresh the tokens (HTTP ${status}); try again.`, { cause: err });
  }
  return new AuthError(AuthErrorCode.REFRESH_FAILED, 502, `The refresh response was refused: ${describe(err)}.`, { cause: err });
}

import * as client from 'openid-client';
import { AuthError, AuthErrorCode } from './errors.js';
import { AnswerTooLarge } from './transport.js';

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

/**
 * A `JSON.parse` failure: V8's message quotes the input around the offending character, i.e. part of a response body
 * (a new token, an ID-token payload). That message must never reach an `AuthError`'s message or cause as it is. Every
 * V8 `JSON.parse` message names JSON; other `SyntaxError`s (WebCrypto's DOMException for bad key usages…) keep theirs.
 */
function isSyntaxError(e: ErrorLike): boolean {
  return e.name === 'SyntaxError' && /JSON/.test(String(e.message));
}

/** The chain's messages and codes, to classify by; a parse error's quoted input must not steer the classification. */
function messages(err: unknown): string {
  return chain(err)
    .filter((e) => !isSyntaxError(e))
    .map((e) => `${String(e.message ?? '')} ${typeof e.code === 'string' ? e.code : ''}`)
    .join(' | ');
}

/** Codes of a connection that dropped once the response had started (undici's socket error, a TCP reset). */
const DROPPED_CODES = new Set(['UND_ERR_SOCKET', 'ECONNRESET']);

/**
 * True for failures to reach the server at all (DNS, refused connection, reset, TLS), or to read its answer to the end:
 * a connection dropped while the body was coming is undici's `TypeError: terminated`, wrapped by oauth4webapi in a
 * parse error.
 */
export function isNetworkError(err: unknown): boolean {
  // openid-client wraps a foreign-realm TypeError in a ClientError, so look along the whole chain.
  return chain(err).some(
    (e) =>
      (e.name === 'TypeError' && /fetch failed|network|^terminated$/i.test(String(e.message))) ||
      (typeof e.code === 'string' && DROPPED_CODES.has(e.code)),
  );
}

/** True when the answer was cut off for its size (`MAX_ANSWER_BYTES`, 1 MiB); also a network error to {@link isNetworkError}. */
export function isAnswerTooLarge(err: unknown): boolean {
  return chain(err).some((e) => e instanceof AnswerTooLarge);
}

/**
 * True when the configured `httpTimeout` ran out: before the headers (openid-client's `OAUTH_TIMEOUT`) or while the body
 * was being read (the timeout signal's `TimeoutError`, which oauth4webapi wraps in a parse error).
 */
export function isTimeout(err: unknown): boolean {
  return chain(err).some((e) => e.code === 'OAUTH_TIMEOUT' || e.name === 'TimeoutError');
}

/**
 * A JWT in compact form (JWS: three parts, JWE: five), whose header always starts `{"`, base64url `eyJ`. The library
 * does not hold every JWT a server may quote: the `private_key_jwt` client assertions are signed inside openid-client
 * (a fresh one per request), and an ID token or JWT access token may come back in an error. Each is a credential or
 * personal data until it expires, and none is worth showing in an error.
 */
const COMPACT_JWT = /eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){2,4}/g;

/**
 * Replaces every occurrence of the `secrets` (codes, verifiers, tokens, the client secret), and every compact JWT, in
 * `text`.
 */
export function redactor(secrets: ReadonlyArray<string | undefined>): (text: string) => string {
  const values = secrets.filter((s): s is string => typeof s === 'string' && s.length >= 8);
  return (text) => values.reduce((result, secret) => result.split(secret).join('[redacted]'), text).replace(COMPACT_JWT, '[redacted]');
}

/** Own properties of openid-client / oauth4webapi errors that are plain facts, never token material. */
const SAFE_FIELDS = ['name', 'code', 'status', 'error', 'error_description'] as const;

/**
 * A copy of an error chain that keeps what helps a log reader (name, message, stack, code, status, upstream error)
 * and drops what oauth4webapi attaches as `cause` or `response`: token-response bodies (access and refresh tokens),
 * raw JWTs, ID-token claims, keys. A `SyntaxError`'s message (and the stack's copy of it) is replaced: `JSON.parse`
 * quotes the body it failed on. `AuthError.cause` is what an app logs with `console.error(err)`. The copies are
 * plain `Error`s: the original classes (DOMException…) cannot be faithfully copied without their internals.
 */
function safeCause(err: unknown, redact: (text: string) => string, depth = 0): Error | undefined {
  if (typeof err !== 'object' || err === null || depth > 4) return undefined;
  const source = err as { message?: unknown; stack?: unknown; cause?: unknown; name?: unknown };
  if (typeof source.message !== 'string') return undefined;
  const cause = safeCause(source.cause, redact, depth + 1);
  const syntax = isSyntaxError(source);
  const message = syntax ? withheldParseMessage(source.message) : redact(source.message);
  const copy = new Error(message, cause === undefined ? undefined : { cause });
  if (typeof source.stack === 'string') {
    // A stack starts with the message: a parse error's is replaced, its frames kept.
    const frames = source.stack.indexOf('\n    at ');
    copy.stack = syntax ? `SyntaxError: ${message}${frames === -1 ? '' : source.stack.slice(frames)}` : redact(source.stack);
  }
  for (const name of SAFE_FIELDS) {
    const value = name === 'name' ? source.name : Object.hasOwn(err, name) ? (err as Record<string, unknown>)[name] : undefined;
    if (typeof value === 'string') Object.assign(copy, { [name]: redact(value) });
    else if (typeof value === 'number') Object.assign(copy, { [name]: value });
  }
  return copy;
}

/** A `JSON.parse` message without the input it quotes; the position, when it gives one, is kept. */
function withheldParseMessage(message: string): string {
  const where = /Unexpected end of JSON input/.test(message) ? ', unexpected end of input' : (/ at position \d+/.exec(message)?.[0] ?? '');
  return `invalid JSON${where} (the parser's message is withheld: it quotes the input)`;
}

/**
 * The sanitised copy of `err` to keep as an `AuthError` cause (see `safeCause`), with `secrets` (tokens…) redacted from
 * its messages.
 */
export function sanitisedCause(err: unknown, secrets: ReadonlyArray<string | undefined> = []): Error | undefined {
  return safeCause(err, redactor(secrets));
}

/** What went wrong with a token-endpoint request, once classified; each grant maps it to its own AuthError. */
type TokenFailure =
  | { kind: 'timeout' }
  | { kind: 'network' }
  /** An OAuth error response (RFC 6749 §5.2), redacted; `status` 200 for one sent with HTTP 200 instead (GitHub). */
  | { kind: 'refused'; status: number; error: string; errorDescription?: string }
  /** A 401 challenge without an error code: the token endpoint did not accept the client's authentication. */
  | { kind: 'client_authentication'; status: number }
  /** The ID token in the response failed validation. */
  | { kind: 'id_token'; detail: string }
  /** A non-OAuth 5xx or 429 answer. */
  | { kind: 'server'; status: number }
  | { kind: 'other'; detail: string };

/**
 * Classifies a failed token request (code exchange or refresh) and makes the sanitised cause to keep (see
 * `safeCause`): the raw error can hold whole token responses and raw JWTs, and `secrets` (the code, the verifier, the
 * tokens, the client secret…) are redacted from whatever the server echoed.
 */
function classifyTokenFailure(err: unknown, secrets: ReadonlyArray<string | undefined>) {
  const redact = redactor(secrets);
  const cause = safeCause(err, redact);
  const failure = ((): TokenFailure => {
    if (isTimeout(err)) return { kind: 'timeout' };
    if (isNetworkError(err)) return { kind: 'network' };
    if (err instanceof client.ResponseBodyError) {
      return {
        kind: 'refused',
        status: err.status,
        error: redact(err.error),
        ...(err.error_description ? { errorDescription: redact(err.error_description) } : {}),
      };
    }
    if (err instanceof client.WWWAuthenticateChallengeError) {
      // A 401 with WWW-Authenticate: how a server answers a client whose Basic credentials it refuses (RFC 6749 §5.2).
      // The OAuth error, when the server gives one, is a parameter of the challenge; openid-client leaves the body unread.
      const params = err.cause.map((challenge) => challenge.parameters).find((p) => typeof p.error === 'string');
      if (params?.error !== undefined) {
        return {
          kind: 'refused',
          status: err.status,
          error: redact(params.error),
          ...(params.error_description ? { errorDescription: redact(params.error_description) } : {}),
        };
      }
      if (err.status === 401) return { kind: 'client_authentication', status: err.status };
    }
    const code = (err as { code?: unknown } | null)?.code;
    // `"id_token"` covers a response without one (or a malformed one) although the scope has `openid`.
    if ((typeof code === 'string' && ID_TOKEN_CODES.has(code)) || /ID Token|"id_token"|JWT|JWS|signature/i.test(messages(err))) {
      return { kind: 'id_token', detail: redact(describe(err)) };
    }
    const upstream = errorInBody(err);
    if (upstream !== undefined) {
      const error = redact(upstream.error).slice(0, 100);
      const errorDescription = upstream.errorDescription === undefined ? undefined : redact(upstream.errorDescription).slice(0, 500);
      return { kind: 'refused', status: 200, error, ...(errorDescription === undefined ? {} : { errorDescription }) };
    }
    const status = transientStatus(err);
    if (status !== undefined) return { kind: 'server', status };
    return { kind: 'other', detail: redact(describe(err)) };
  })();
  return { failure, cause };
}

/**
 * HTTP statuses of an authorization server endpoint (token, PAR) that may answer otherwise later, whatever its body
 * says: a server failure (5xx), or too many requests (429, RFC 6585 §4), which is about the rate, not the request.
 */
export function isTransient(status: number): boolean {
  return status >= 500 || status === 429;
}

/**
 * The status of a non-OAuth error answer that {@link isTransient} calls the server's (oauth4webapi calls a 5xx without
 * an OAuth error not conform, a 4xx, such as 429, without a JSON body not JSON), or undefined for any other failure.
 */
export function transientStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  const status = (err as { cause?: { status?: unknown } } | null)?.cause?.status;
  const notOAuth = code === 'OAUTH_RESPONSE_IS_NOT_CONFORM' || code === 'OAUTH_RESPONSE_IS_NOT_JSON';
  return notOAuth && typeof status === 'number' && isTransient(status) ? status : undefined;
}

function upstreamOf(failure: { error: string; errorDescription?: string }, cause: Error | undefined) {
  return { cause, error: failure.error, ...(failure.errorDescription === undefined ? {} : { errorDescription: failure.errorDescription }) };
}

/**
 * Token-endpoint errors about the client itself (RFC 6749 §5.2), not the code: the app's configuration is wrong, and
 * nothing the user does will help, so they are the server side's failure (502), not a bad request.
 */
// GitHub's `incorrect_client_credentials` (sent with HTTP 200) is its invalid_client.
const CLIENT_REFUSED = new Set(['invalid_client', 'unauthorized_client', 'unsupported_grant_type', 'incorrect_client_credentials']);

function clientRefused(reason: string): string {
  return `The token endpoint refused this client (${reason}): check its credentials, authentication method and registration at the authorization server.`;
}

/**
 * Whether an OAuth error from the token endpoint is about the client itself: one of {@link CLIENT_REFUSED}, or any 401,
 * which at the token endpoint is always about the client's authentication (RFC 6749 §5.2), whatever the code says.
 * The same rule for the code exchange and the refresh, whether the error came with its status or with HTTP 200.
 */
function refusesClient(status: number, error: string): boolean {
  return CLIENT_REFUSED.has(error) || status === 401;
}

/**
 * Classifies a failure of the code exchange (token request plus ID-token validation). Upstream `error` and
 * `error_description` are kept; tokens and codes never reach the message.
 */
export function exchangeError(err: unknown, secrets: ReadonlyArray<string | undefined> = []): AuthError {
  if (err instanceof AuthError) return err;
  const { failure, cause } = classifyTokenFailure(err, secrets);
  switch (failure.kind) {
    case 'timeout':
      return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 504, 'The token endpoint did not answer in time.', { cause });
    case 'network':
      return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, 'The token endpoint could not be reached.', { cause });
    case 'refused':
      if (isTransient(failure.status)) {
        return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, `The token endpoint failed (HTTP ${failure.status}).`, upstreamOf(failure, cause));
      }
      if (refusesClient(failure.status, failure.error)) {
        return new AuthError(AuthErrorCode.TOKEN_EXCHANGE_FAILED, 502, clientRefused(failure.error), upstreamOf(failure, cause));
      }
      return new AuthError(
        AuthErrorCode.TOKEN_EXCHANGE_FAILED,
        400,
        failure.status === 200
          ? `The token response was refused: the token endpoint answered with error ${failure.error}.`
          : `The token endpoint refused the authorization code: ${failure.error}.`,
        upstreamOf(failure, cause),
      );
    case 'client_authentication':
      return new AuthError(AuthErrorCode.TOKEN_EXCHANGE_FAILED, 502, clientRefused(`HTTP ${failure.status}`), { cause });
    case 'id_token':
      return new AuthError(AuthErrorCode.INVALID_ID_TOKEN, 400, `The ID token is invalid: ${failure.detail}.`, { cause });
    case 'server':
      return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, `The token endpoint failed (HTTP ${failure.status}).`, { cause });
    case 'other':
      return (
        tokenResponseShapeError(err, cause) ??
        new AuthError(AuthErrorCode.TOKEN_EXCHANGE_FAILED, 400, `The token response was refused: ${failure.detail}.`, { cause })
      );
  }
}

/** The token response body is not JSON (or not labelled as JSON); an ID token that is not is classified before. */
function isNotJson(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'OAUTH_RESPONSE_IS_NOT_JSON' || code === 'OAUTH_PARSE_ERROR';
}

/** oauth4webapi's refusal of a 2xx token response: its message names the member, its cause holds the parsed body. */
function shapeRefusal(err: unknown): ErrorLike | undefined {
  return chain(err)
    .filter((e) => typeof e.message === 'string' && (e.message.startsWith('"response" body') || e.message.includes('`token_type`')))
    .at(-1);
}

/**
 * The OAuth error (RFC 6749 §5.2) of a 2xx token response that has one: some servers (GitHub) answer errors with
 * HTTP 200, which oauth4webapi refuses only for the missing `access_token`. Not redacted yet.
 */
function errorInBody(err: unknown): { error: string; errorDescription?: string } | undefined {
  const body = (shapeRefusal(err)?.cause as { body?: unknown } | undefined)?.body;
  if (typeof body !== 'object' || body === null) return undefined;
  const { error, error_description: description } = body as { error?: unknown; error_description?: unknown };
  if (typeof error !== 'string') return undefined;
  return { error, ...(typeof description === 'string' ? { errorDescription: description } : {}) };
}

/**
 * A 2xx token response that is not what RFC 6749 §5.1 describes: not a JSON object, no `access_token`, no
 * `token_type`, or a `token_type` other than Bearer (RFC 6750) or DPoP (RFC 9449). openid-client refuses all of these;
 * this names the problem. (An OAuth error sent with HTTP 200 is classified before, as refused with status 200.)
 */
function tokenResponseShapeError(err: unknown, cause: Error | undefined): AuthError | undefined {
  const refused = (why: string) => new AuthError(AuthErrorCode.TOKEN_EXCHANGE_FAILED, 400, `The token response was refused: ${why}.`, { cause });
  if (isNotJson(err)) return refused('it is not JSON');
  const detail = shapeRefusal(err);
  if (detail === undefined) return undefined;
  const message = String(detail.message);
  if (message.includes('`token_type`')) return refused('its token_type is neither Bearer nor DPoP');
  if (message.includes('top level object')) return refused('it is not a JSON object');
  for (const member of ['access_token', 'token_type', 'expires_in', 'refresh_token', 'scope', 'id_token']) {
    if (message.includes(`"${member}"`)) return refused(`its ${member} is missing or malformed`);
  }
  return undefined;
}

/**
 * The most specific message in the chain; oauth4webapi's messages name claims and parameters, never their values. A
 * `JSON.parse` message, which quotes its input, is never used: the message wrapping it says what failed to parse.
 */
export function describe(err: unknown): string {
  const last = chain(err)
    .filter((e) => !isSyntaxError(e))
    .map((e) => e.message)
    .filter((m): m is string => typeof m === 'string' && m !== '')
    .at(-1);
  return (last ?? 'invalid response').replace(/\.$/, '');
}

/**
 * Refresh errors that mean the refresh token is dead, so the login is over: `invalid_grant` (RFC 6749 §5.2: revoked,
 * expired or reused), and GitHub's `bad_refresh_token` (its answer, with HTTP 200, to an expired, revoked or already
 * used refresh token).
 */
const LOGIN_ENDING = new Set(['invalid_grant', 'bad_refresh_token']);

/** True for a token endpoint's `error` saying the refresh token is dead (see {@link LOGIN_ENDING}). */
export function isDeadRefreshToken(error: string | undefined): boolean {
  return error !== undefined && LOGIN_ENDING.has(error);
}

/** A refresh the token endpoint answered with an OAuth error, with HTTP `status` (200 for servers that answer so). */
function refreshRefused(failure: { status: number; error: string; errorDescription?: string }, cause: Error | undefined): AuthError {
  const { status } = failure;
  const upstream = upstreamOf(failure, cause);
  if (isTransient(status)) {
    return new AuthError(AuthErrorCode.REFRESH_FAILED, 503, `The token endpoint failed to refresh the tokens (HTTP ${status}); try again.`, upstream);
  }
  // Before the login-ending codes: a 401 says the client's credentials are wrong, which would end every user's login.
  if (refusesClient(status, failure.error)) {
    return new AuthError(AuthErrorCode.REFRESH_FAILED, 502, clientRefused(failure.error), upstream);
  }
  if (LOGIN_ENDING.has(failure.error)) {
    return new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, `The authorization server ended this login (${failure.error}); log in again.`, upstream);
  }
  return new AuthError(AuthErrorCode.REFRESH_FAILED, 502, `The token endpoint refused the refresh: ${failure.error}.`, upstream);
}

/**
 * Classifies a failure of the refresh-token grant (RFC 6749 §6). `login_required` (401) means the login is over:
 * `invalid_grant` or `bad_refresh_token` (revoked, expired or reused refresh token; also when sent with HTTP 200; the
 * caller re-reads the token store once before believing `invalid_grant`), or a refreshed ID token that fails
 * validation. Anything else keeps the login: `refresh_failed`, 503 when a retry may work (network, timeout, 5xx,
 * 429), 502 when the server refused for another reason (its `error` is kept) or answered nonsense.
 */
export function refreshError(err: unknown, secrets: ReadonlyArray<string | undefined> = []): AuthError {
  if (err instanceof AuthError) return err;
  const { failure, cause } = classifyTokenFailure(err, secrets);
  const retry = (message: string) => new AuthError(AuthErrorCode.REFRESH_FAILED, 503, `${message}; try again.`, { cause });
  switch (failure.kind) {
    case 'timeout':
      return retry('The token endpoint did not answer the refresh in time');
    case 'network':
      return retry('The token endpoint could not be reached to refresh the tokens');
    case 'refused':
      return refreshRefused(failure, cause);
    case 'client_authentication':
      return new AuthError(AuthErrorCode.REFRESH_FAILED, 502, clientRefused(`HTTP ${failure.status}`), { cause });
    case 'id_token':
      return new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, `The refreshed ID token is invalid (${failure.detail}); log in again.`, { cause });
    case 'server':
      return retry(`The token endpoint failed to refresh the tokens (HTTP ${failure.status})`);
    case 'other':
      return new AuthError(AuthErrorCode.REFRESH_FAILED, 502, `The refresh response was refused: ${isNotJson(err) ? 'it is not JSON' : failure.detail}.`, {
        cause,
      });
  }
}

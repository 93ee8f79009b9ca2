import type { Request } from 'express';
import { AuthError, AuthErrorCode } from './errors.js';
import { fetchResource, resourceRequest, type ResourceRequestInit } from './resource.js';
import { endsLogin, needsRefresh } from './refresh.js';
import type { Runtime } from './runtime.js';
import { readState, type LoginState } from './session.js';
import { sessionTtlSeconds } from './token-store.js';
import { publicTokens, sessionCopy, unpackTokens, type StoredTokens, type TokenSet } from './tokens.js';

/**
 * Validated ID-token claims (OpenID Connect Core §2, §5.1).
 *
 * @example
 * ```ts
 * // Claims beyond the five typed here are `unknown`: the provider decides their shape, so check it.
 * const email = typeof req.auth.claims?.email === 'string' ? req.auth.claims.email : undefined;
 * ```
 */
export interface IdTokenClaims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string | readonly string[];
  readonly exp: number;
  readonly iat: number;
  readonly [claim: string]: unknown;
}

/**
 * `req.auth`, on every request that passed through `auth()`.
 *
 * @example
 * ```ts
 * app.get('/api/orders', requireAuth(), async (req, res) => {
 *   const token = await req.auth.getAccessToken();
 *   const orders = await fetch('https://api.example.com/orders', { headers: { authorization: `Bearer ${token}` } });
 *   res.json(await orders.json());
 * });
 * ```
 */
export interface AuthContext {
  /** True while the session holds a login. */
  readonly isAuthenticated: boolean;
  /** The validated ID-token claims; undefined when logged out or when the scope has no `openid`. */
  readonly claims: IdTokenClaims | undefined;
  /** The current tokens (never the refresh token); undefined when logged out. */
  readonly tokens: TokenSet | undefined;
  /**
   * What the `fetchUser` option returned at login, kept in the session with it; undefined when logged out or when
   * `fetchUser` is not set. The way to know who logged in at a server without ID tokens (no `openid` scope).
   */
  readonly user: Readonly<Record<string, unknown>> | undefined;
  /**
   * A usable access token. When the session's copy is valid for more than `refreshSkew` seconds (at most half its
   * lifetime), it is returned at no cost; otherwise the tokens are refreshed first, once per login however many
   * requests (and, with `redis`, processes) ask at the same time.
   *
   * Rejects with {@link AuthError}:
   * - `login_required` (401) when there is no login, when the token expired and there is no refresh token (the login is
   *   kept: logging in again replaces it), or when the authorization server ended the login (`invalid_grant`), which
   *   removes it from the session.
   * - `refresh_failed` (503, or 502 when the server refused for another reason) when the refresh failed; the login and
   *   its tokens are kept, and a later call retries.
   * - `session_unavailable` (503) when Redis failed.
   *
   * @example
   * ```ts
   * const token = await req.auth.getAccessToken();
   * await fetch(url, { headers: { authorization: `Bearer ${token}` } });
   * ```
   * A DPoP-bound token (`tokens.tokenType` `'DPoP'`, option `dpop`) is useless without a proof: call APIs through
   * {@link AuthContext.fetch} instead. A login made before `dpop` was turned on keeps a Bearer token.
   */
  getAccessToken(): Promise<string>;
  /**
   * Refreshes the tokens now, whatever their expiry (for instance after a resource server answered 401), and returns
   * the new public token set. Concurrent callers share one refresh; a version another request or process stored since
   * this request read its session counts as the refresh. Rejects like {@link AuthContext.getAccessToken}.
   *
   * @example
   * ```ts
   * let response = await callApi(await req.auth.getAccessToken());
   * if (response.status === 401) response = await callApi((await req.auth.refresh()).accessToken);
   * ```
   */
  refresh(): Promise<TokenSet>;
  /**
   * The raw ID token of the login (its newest version), or undefined when none was issued or it is no longer known.
   * It is not part of {@link AuthContext.tokens}: the session, which express-session parses and hashes on every
   * request, carries only its validated claims ({@link AuthContext.claims}); the token itself stays in the token store
   * (Redis with the `redis` option: one `GET`; otherwise this process's memory). Logout's `id_token_hint` uses it.
   * Rejects with `login_required` (401) when there is no login, `session_unavailable` (503) when Redis failed.
   *
   * @example
   * ```ts
   * const idToken = await req.auth.getIdToken(); // e.g. for a downstream service that asks for it
   * ```
   */
  getIdToken(): Promise<string | undefined>;
  /**
   * Calls a resource server (an API) with the login's access token, in the `Authorization` header only. A DPoP-bound
   * token (option `dpop`) goes as `DPoP <token>` with a fresh proof, retried once when the server asks for a new
   * nonce; otherwise as `Bearer <token>`. Every response is returned as is, 401 included (the token may have been
   * revoked, or have an unknown expiry: the app decides whether to refresh or log in again). Rejects with
   * {@link AuthError} `login_required` (401) like `getAccessToken()`, `resource_request_failed` (502, or 504 when the
   * response headers do not arrive within `httpTimeout`), and `misconfigured` (500, nothing sent, neither URL nor
   * header quoted) for a request that is the app's mistake: a relative URL, credentials in the URL, a URL that is not
   * `https:` (or `http:` with `allowInsecureRequests`), `Authorization`/`DPoP` headers passed in, a body on GET/HEAD, an
   * invalid header or method. The timeout ends once the headers are in: reading the body is the app's to bound, with
   * `init.signal` (whose abort rejects with its reason, as `fetch` does).
   *
   * @example
   * ```ts
   * const response = await req.auth.fetch('https://api.example.com/orders', { method: 'POST', body: JSON.stringify(order), headers: { 'content-type': 'application/json' } });
   * // httpTimeout ends with the headers; the app's own signal bounds the body too
   * const report = await req.auth.fetch('https://api.example.com/report', { signal: AbortSignal.timeout(30_000) });
   * const text = await report.text();
   * ```
   */
  fetch(url: string | URL, init?: ResourceRequestInit): Promise<Response>;
}

declare global {
  // Declaration merging is how Express types request extensions; a namespace is the only way to reach it.
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Login state and tokens, set by `auth()`. */
      auth: AuthContext;
    }
  }
}

/** @internal The per-request `req.auth`. Cheap to build: every getter reads the session lazily. */
export class RequestAuth implements AuthContext {
  readonly #req: Request;
  // Private: the runtime holds the client secret, and nothing that walks or prints req.auth may come across it.
  readonly #runtime: Runtime;

  constructor(req: Request, runtime: Runtime) {
    this.#req = req;
    this.#runtime = runtime;
  }

  /** @internal The runtime of the `auth()` instance that built this context (for guards). */
  static runtimeOf(context: RequestAuth): Runtime {
    return context.#runtime;
  }

  #login(): LoginState | undefined {
    return readState(this.#req)?.login;
  }

  get isAuthenticated(): boolean {
    return this.#login() !== undefined;
  }

  get claims(): IdTokenClaims | undefined {
    return this.#login()?.claims as IdTokenClaims | undefined;
  }

  get tokens(): TokenSet | undefined {
    const tokens = unpackTokens(this.#login()?.tokens);
    return tokens === undefined ? undefined : publicTokens(tokens);
  }

  get user(): Readonly<Record<string, unknown>> | undefined {
    return this.#login()?.user;
  }

  async fetch(url: string | URL, init?: ResourceRequestInit): Promise<Response> {
    const login = this.#login();
    if (login === undefined) throw notLoggedIn();
    // The app's mistakes are refused before anything is sent, a refresh included.
    const request = resourceRequest(url, init, {
      allowInsecureRequests: this.#runtime.config.allowInsecureRequests,
      secrets: [unpackTokens(login.tokens)?.accessToken],
    });
    // Through the same path as getAccessToken(), so that whatever it does about expiry applies here too.
    const tokens = await this.#usable(login);
    return fetchResource(this.#runtime, { accessToken: tokens.accessToken, tokenType: tokens.tokenType, dpopKey: login.dpopKey }, request, init);
  }

  async getAccessToken(): Promise<string> {
    const login = this.#login();
    if (login === undefined) throw notLoggedIn();
    return (await this.#usable(login)).accessToken;
  }

  /** The session copy while it is still good (no Redis command: the hot path), else the refreshed tokens. */
  async #usable(login: LoginState): Promise<StoredTokens> {
    const tokens = unpackTokens(login.tokens);
    if (tokens !== undefined && !needsRefresh(tokens, this.#runtime.config.refreshSkew)) return tokens;
    return this.#renew(login, false);
  }

  async getIdToken(): Promise<string | undefined> {
    const login = this.#login();
    if (login === undefined) throw notLoggedIn();
    const entry = await this.#runtime.tokenStore.read(login.id);
    return entry === undefined || entry.ended ? undefined : entry.tokens.idToken;
  }

  async refresh(): Promise<TokenSet> {
    const login = this.#login();
    if (login === undefined) throw notLoggedIn();
    return publicTokens(await this.#renew(login, true));
  }

  /** Asks the refresher, then puts its version into the session (express-session saves it with the response). */
  async #renew(login: LoginState, force: boolean): Promise<StoredTokens> {
    const runtime = this.#runtime;
    try {
      const record = await runtime.refresher.current(login, { force, ttlSeconds: sessionTtlSeconds(this.#req) });
      const state = readState(this.#req);
      // A new version goes into the session; so does the current one when the session's copy could not be read.
      if (state?.login?.id === login.id && ((state.login.version ?? 1) !== record.v || unpackTokens(state.login.tokens) === undefined)) {
        const { claims: _previous, ...rest } = state.login;
        // express-session saves the session as the response ends; a logout meanwhile is caught after that save
        // (save-check.ts), as after any other write of a session that holds a login.
        state.login = { ...rest, tokens: sessionCopy(record.tokens), version: record.v, ...(record.claims === undefined ? {} : { claims: record.claims }) };
      }
      return record.tokens;
    } catch (err) {
      if (endsLogin(err)) {
        const state = readState(this.#req);
        if (state?.login?.id === login.id) delete state.login;
      }
      throw err;
    }
  }

  toJSON(): { isAuthenticated: boolean } {
    // Keeps tokens out of anything that serialises the request by accident.
    return { isAuthenticated: this.isAuthenticated };
  }

  /** What `console.log(req.auth)` prints (util.inspect), for the same reason: no tokens, no configuration. */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `RequestAuth { isAuthenticated: ${String(this.isAuthenticated)} }`;
  }
}

function notLoggedIn(): AuthError {
  return new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'Not logged in.');
}

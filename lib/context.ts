import type { Request } from 'express';
import { AuthError, AuthErrorCode } from './errors.js';
import { fetchResource, type ResourceRequestInit } from './resource.js';
import type { Runtime } from './runtime.js';
import { readState, type LoginState } from './session.js';
import { isExpired, publicTokens, type TokenSet } from './tokens.js';

/** Validated ID-token claims (OpenID Connect Core §2, §5.1). */
export interface IdTokenClaims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string | readonly string[];
  readonly exp: number;
  readonly iat: number;
  readonly [claim: string]: unknown;
}

/**
 * `req.auth`, on every request that passed through {@link auth}.
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
   * A usable access token. Rejects with {@link AuthError} `login_required` (401) when there is no login or the
   * token has expired and cannot be renewed.
   */
  getAccessToken(): Promise<string>;
  /**
   * Calls a resource server (an API) with the login's access token, in the `Authorization` header only. A DPoP-bound
   * token (option `dpop`) goes as `DPoP <token>` with a fresh proof, retried once when the server asks for a new
   * nonce; otherwise as `Bearer <token>`. Every response is returned as is, 401 included (the token may have been
   * revoked, or have an unknown expiry: the app decides whether to refresh or log in again). Rejects with
   * {@link AuthError} `login_required` (401) like `getAccessToken()`, `resource_request_failed` (502/504) when the
   * server cannot be reached within `httpTimeout`, and `misconfigured` for a relative or (without
   * `allowInsecureRequests`) `http:` URL, or when `Authorization`/`DPoP` headers are passed in.
   *
   * @example
   * ```ts
   * const response = await req.auth.fetch('https://api.example.com/orders', { method: 'POST', body: JSON.stringify(order), headers: { 'content-type': 'application/json' } });
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

/** @internal Gives guards the runtime without widening the public type. */
export const kRuntime = Symbol('express-oauth-pkce.runtime');

/** @internal The per-request `req.auth`. Cheap to build: every getter reads the session lazily. */
export class RequestAuth implements AuthContext {
  readonly #req: Request;
  declare readonly [kRuntime]: Runtime;

  constructor(req: Request, runtime: Runtime) {
    this.#req = req;
    // Non-enumerable: the runtime holds the client secret, and nothing that walks req.auth may come across it.
    Object.defineProperty(this, kRuntime, { value: runtime });
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
    const login = this.#login();
    return login === undefined ? undefined : publicTokens(login.tokens);
  }

  get user(): Readonly<Record<string, unknown>> | undefined {
    return this.#login()?.user;
  }

  async fetch(url: string | URL, init?: ResourceRequestInit): Promise<Response> {
    // Through getAccessToken(), so that whatever it does about expiry applies here too.
    const accessToken = await this.getAccessToken();
    const login = this.#login();
    if (login === undefined) throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'Not logged in.');
    return fetchResource(this[kRuntime], { accessToken, tokenType: login.tokens.tokenType, dpopKey: login.dpopKey }, url, init);
  }

  async getAccessToken(): Promise<string> {
    const login = this.#login();
    if (login === undefined) throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'Not logged in.');
    if (!isExpired(login.tokens)) return login.tokens.accessToken;
    throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'The access token has expired; log in again.');
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

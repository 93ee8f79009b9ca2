import type { Request } from 'express';
import { AuthError, AuthErrorCode } from './errors.js';
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
   * A usable access token. Rejects with {@link AuthError} `login_required` (401) when there is no login or the
   * token has expired and cannot be renewed.
   */
  getAccessToken(): Promise<string>;
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

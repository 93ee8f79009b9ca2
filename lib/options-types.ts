import type { Request } from 'express';
import type { Redis, Cluster } from 'ioredis';
import type { JWK } from 'jose';
import type { AuthError } from './errors.js';
import type { ResourceFetch } from './resource.js';
import type { TokenSet } from './tokens.js';

/**
 * The `loginParams` option: extra authorization-request parameters for the login this request starts, or none.
 *
 * @example
 * ```ts
 * const loginParams: LoginParams = (req) => (typeof req.query.hint === 'string' && /^[^\s@]+@example\.com$/.test(req.query.hint) ? { login_hint: req.query.hint } : undefined);
 * ```
 */
export type LoginParams = (req: Request) => Record<string, string> | undefined | Promise<Record<string, string> | undefined>;

/**
 * How the client authenticates at the token endpoint.
 *
 * @example
 * ```ts
 * // GitHub takes the secret in the request body only.
 * app.use(auth({ ...options, clientSecret: process.env.CLIENT_SECRET!, clientAuthMethod: 'client_secret_post' }));
 * ```
 */
export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';

/**
 * The endpoints of an authorization server that publishes no metadata (GitHub, Strava, Dropbox, in-house servers).
 * Used instead of `issuer`: no discovery request is made.
 *
 * @example
 * ```ts
 * server: {
 *   authorizationEndpoint: 'https://github.com/login/oauth/authorize',
 *   tokenEndpoint: 'https://github.com/login/oauth/access_token',
 * }
 * ```
 */
export interface ServerEndpoints {
  /**
   * The issuer identifier, when the server has one. Required when `scope` has `openid` (ID tokens name it in `iss`).
   * Nothing is discovered, so ID tokens and RFC 9207 `iss` are compared with it as a string: write it exactly as the
   * server does, trailing '/' or not. A `URL` object is refused when it is a bare origin, because `URL` always adds the
   * '/' (`new URL('https://idp.example.com').href` is `'https://idp.example.com/'`); give such an issuer as a string.
   */
  issuer?: string | URL;
  authorizationEndpoint: string | URL;
  tokenEndpoint: string | URL;
  revocationEndpoint?: string | URL;
  userinfoEndpoint?: string | URL;
  /** The server's key set. Required when `scope` has `openid`: ID-token signatures are verified with it. */
  jwksUri?: string | URL;
  /** Needed for `idpLogout: true` (RP-initiated logout). */
  endSessionEndpoint?: string | URL;
  /** Needed for `pushedAuthorizationRequests: true`. */
  pushedAuthorizationRequestEndpoint?: string | URL;
}

/**
 * A `private_key_jwt` key given with its metadata.
 *
 * @example
 * ```ts
 * privateKey: { key: readFileSync('client-key.pem', 'utf8'), kid: '2024-01', audience: 'token_endpoint' }
 * ```
 */
export interface ClientPrivateKeyOptions {
  /** A PEM private key (PKCS#8, PKCS#1 or SEC1) or a private JWK. */
  key: string | JWK;
  /** The key id registered with the server (its JWKS `kid`). Defaults to the JWK's own `kid`. */
  kid?: string;
  /**
   * The JWS algorithm of the client assertion.
   * @default the JWK's `alg`, else `RS256` for RSA keys, `ES256`/`ES384`/`ES512` by curve, `EdDSA` for Ed25519
   */
  alg?: string;
  /**
   * The assertion's `aud`: the issuer identifier (Auth0, Keycloak), or the URL of the endpoint called (Okta, Entra ID,
   * servers without an issuer): the token endpoint for token requests, the revocation and PAR endpoints for those.
   * @default `'issuer'` (the token endpoint when the server has no issuer)
   */
  audience?: 'issuer' | 'token_endpoint';
}

/**
 * The private key of `private_key_jwt`: a private JWK that carries its `kid`, or {@link ClientPrivateKeyOptions}.
 *
 * @example
 * ```ts
 * privateKey: JSON.parse(process.env.CLIENT_PRIVATE_JWK!) // { kty: 'EC', crv: 'P-256', x, y, d, kid: 'key-1' }
 * ```
 */
export type ClientPrivateKey = JWK | ClientPrivateKeyOptions;

/**
 * Loads the user after a login, for servers without ID tokens (or to add profile data). Called once per login,
 * before the login is stored; the result is kept in the session as `req.auth.user`. It must be a plain JSON object
 * (`await response.json()`, not the Response; not a Map, a Date, a class instance or an array, nor anything whose
 * `toJSON()` gives something else): otherwise, as on a rejection, the login fails with `user_fetch_failed`, and the
 * tokens just issued are revoked (best effort). The login waits for the hook: bound a slow body with `fetch`'s `signal`.
 * Return what the app uses, not a whole profile: the session is read, parsed and hashed on every request, and in the
 * bench every 100 B of it cost about 1 % of the app's throughput (bench/FIXES.md §10).
 *
 * @example
 * ```ts
 * fetchUser: async (tokens, { fetch }) => {
 *   const profile = (await (await fetch('https://api.github.com/user')).json()) as { id: number; login: string; name: string | null };
 *   return { id: profile.id, login: profile.login, name: profile.name };
 * },
 * ```
 */
export type FetchUser = (tokens: TokenSet, helpers: { fetch: ResourceFetch }) => Promise<object>;

/**
 * The `routes` option: paths of the library's routes, matched literally, on the app's root (full paths, whatever the
 * app's own routers are mounted under). The callback path is the path of `redirectUri`.
 *
 * @example
 * ```ts
 * const routes: RouteOptions = { login: '/auth/login', logout: '/auth/logout' };
 * app.use(auth({ ...options, redirectUri: 'https://app.example.com/auth/callback', routes }));
 * ```
 */
export interface RouteOptions {
  /** @default `'/login'` */
  login?: string;
  /** @default `'/logout'` */
  logout?: string;
  /**
   * Where the authorization server sends the browser back after RP-initiated logout (`GET`). Only with
   * `idpLogout: true`; register `<origin of redirectUri><this path>` as a `post_logout_redirect_uri`.
   * @default `'/logout/callback'`
   */
  postLogout?: string;
  /**
   * OpenID Connect Back-Channel Logout endpoint (`POST`). Mounted only with `redis` and an `openid` scope; register
   * `<origin of redirectUri><this path>` as the client's `backchannel_logout_uri`.
   * @default `'/backchannel-logout'`
   */
  backchannelLogout?: string;
}

/**
 * Options of `auth()`. Validated once, when `auth()` is called: a mistake the options themselves show is a `TypeError`
 * at startup that says how to fix it; what depends on the server (its metadata, the client's credentials) shows at the
 * first login.
 *
 * @example
 * ```ts
 * app.use(auth({
 *   issuer: 'https://idp.example.com',
 *   clientId: 'app',
 *   clientSecret: process.env.CLIENT_SECRET!,
 *   redirectUri: 'https://app.example.com/callback',
 *   scope: 'openid email offline_access',
 *   redis,
 * }));
 * ```
 */
export interface AuthOptions {
  /**
   * The issuer identifier, not the URL of its metadata document (a path with '/.well-known/' is refused). Its metadata
   * is discovered on first use (see `discovery`) and must name this issuer. Give either `issuer` or `server`.
   * Discovery compares the two as URL hrefs: for a bare origin a trailing '/' (which a `URL` object always adds) does not
   * matter, but with a path it does (`'https://idp.example.com/realms/app/'` is not `'https://idp.example.com/realms/app'`):
   * write it as the metadata's `issuer` does. ID tokens are then checked against the `issuer` the metadata names, exactly.
   * No query or fragment (RFC 8414 §2), not even a bare '?' or '#'.
   */
  issuer?: string | URL;
  /** The server's endpoints, for a server without discovery. Give either `issuer` or `server`. */
  server?: ServerEndpoints;
  /**
   * Which metadata document `issuer` publishes: OpenID Connect Discovery (`/.well-known/openid-configuration`) or
   * RFC 8414 (`/.well-known/oauth-authorization-server`).
   * @default `'oidc'`
   */
  discovery?: 'oidc' | 'oauth2';
  /** The client identifier registered at the authorization server. */
  clientId: string;
  /**
   * The client secret. Omit it for a public client (PKCE only, `clientAuthMethod: 'none'`). Present but `undefined`
   * (`clientSecret: process.env.CLIENT_SECRET` with the variable unset) is refused at startup rather than taken for a
   * public client: leave the option out instead.
   */
  clientSecret?: string;
  /**
   * Token-endpoint client authentication. It must be one the server advertises, when it publishes metadata (`'none'`
   * is not checked: servers that accept public clients often leave it out).
   * @default `'private_key_jwt'` when `privateKey` is set, `'client_secret_basic'` when `clientSecret` is set, otherwise `'none'`
   */
  clientAuthMethod?: ClientAuthMethod;
  /** The client's private key for `private_key_jwt` (RFC 7523). Read once, at startup. Present but `undefined` is refused. */
  privateKey?: ClientPrivateKey;
  /** Loads `req.auth.user` after each login (see {@link FetchUser}). */
  fetchUser?: FetchUser;
  /**
   * Push the authorization request over the back channel (PAR, RFC 9126): the browser only carries `request_uri` and
   * `client_id`. Always on when the server's metadata says `require_pushed_authorization_requests`.
   * @default false
   */
  pushedAuthorizationRequests?: boolean;
  /**
   * Sender-constrained tokens (DPoP, RFC 9449): a key pair per login, kept in the session, proves possession on every
   * token request and on `req.auth.fetch()`. A server that answers with a Bearer token fails the login. Logins made
   * before it was turned on have no key and stay Bearer (refreshed without a proof) until the user logs in again;
   * logins made while it was on keep proving their key after it is turned off.
   * @default false
   */
  dpop?: boolean;
  /**
   * Absolute callback URL, exactly as registered. It is sent as `new URL(redirectUri).href`, so a string that URL parsing
   * changes (`'https://App.Example.com:443/cb'` becomes `'https://app.example.com/cb'`) is refused, naming the form to
   * register and configure: servers compare redirect URIs exactly (RFC 9700 §4.1.3). Its path is where the `GET` callback route is mounted, matched
   * exactly, so it must be a path of its own: not '/', and none of the other routes. No query string (the token request
   * repeats the redirect URI without it; per-login data travels in the login transaction) and no fragment.
   */
  redirectUri: string | URL;
  /**
   * Space-separated scopes.
   * @default `'openid'`
   */
  scope?: string;
  /**
   * Extra authorization-request parameters (`prompt`, `audience`, `acr_values`, …). Protocol parameters the library
   * sets itself are refused.
   *
   * `max_age` (OpenID Connect Core §3.1.2.1) must be a whole number of seconds as a string and needs `openid` in
   * `scope`: each login records the value it sent, and its callback refuses an ID token whose `auth_time` is missing or
   * older than `max_age` + `clockTolerance` (`invalid_id_token`).
   * @default `{}`
   */
  authorizationParams?: Record<string, string>;
  /**
   * Authorization-request parameters for one login, decided from the request to the login route: a "switch account"
   * link (`prompt: 'select_account'`), a sign-up button (`prompt: 'create'`, or the server's own hint), `login_hint`,
   * `ui_locales` from the app's language, a step-up (`max_age: '0'`, `acr_values`). Called at every `GET` of the login
   * route, before anything is stored; what it returns (or resolves to) goes over `authorizationParams` and is checked
   * like them, and a mistake (a parameter the library sets itself, a value that is not a string, a bad `max_age`) is
   * answered 500 `misconfigured`. An error it throws goes to the app's error handling. Anyone can craft a login link,
   * so pass on only values you chose or checked, never the query as it came. Of a step-up, only `max_age` is checked
   * at the callback (`auth_time`); `acr_values` is a wish the server may not grant, and the ID token's `acr` is not
   * compared with it: check `req.auth.claims.acr` before granting what the step-up is for.
   *
   * @example
   * ```ts
   * // <a href="/login?account=switch">Use another account</a>
   * loginParams: (req) => (req.query.account === 'switch' ? { prompt: 'select_account' } : undefined),
   * ```
   * @default none
   */
  loginParams?: LoginParams;
  /**
   * An ioredis client (or Cluster). Makes single-use checks and refresh single-flight hold across processes. Other
   * clients (node-redis) are refused at startup: the library calls ioredis signatures such as
   * `set(key, value, 'PX', ms, 'NX')`, which node-redis reads differently.
   */
  redis?: Redis | Cluster;
  /**
   * Prefix of every Redis key the library writes.
   * @default `'oauth-pkce:'`
   */
  keyPrefix?: string;
  /**
   * Allow `http:` URLs for the issuer and its endpoints. Only for development and tests: when `auth()` is called with
   * `NODE_ENV=production`, it emits the process warning `EXPRESS_OAUTH_PKCE_INSECURE_REQUESTS` (once per process).
   * @default false
   */
  allowInsecureRequests?: boolean;
  /** Route paths. The callback path is taken from `redirectUri`. */
  routes?: RouteOptions;
  /**
   * Same-origin path the browser lands on after logout (local, and after the return from RP-initiated logout). Not
   * one of the routes that answer a plain visit with an error (the callback, logout and logout-return routes).
   * @default `'/'`
   */
  postLogoutRedirect?: string;
  /**
   * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): after the local logout, send the browser to the
   * server's `end_session_endpoint` to end the login there too. Needs `routes.postLogout` registered at the server.
   * Discovered metadata without the endpoint means local logout only; with `server`, set `server.endSessionEndpoint`.
   * @default false
   */
  idpLogout?: boolean;
  /**
   * Name of express-session's cookie (its `name` option), so that logout can clear it. express-session does not
   * expose the name on the request.
   * @default `'connect.sid'`
   */
  sessionCookieName?: string;
  /**
   * How long, in seconds, the back-channel logout index remembers a login (`sid`/`sub` → session ids). Must cover
   * the longest time a session can live; the session cookie's `maxAge` is used when it is longer.
   * @default 1209600 (14 days)
   */
  sessionIndexTtl?: number;
  /**
   * Timeout of each request to the authorization server, and of `req.auth.fetch()` until the response headers arrive,
   * in milliseconds. openid-client, which sends the requests to the authorization server, takes whole seconds, so for
   * those the value is rounded up: `200` waits 1 s. `req.auth.fetch()` and the key-set fetches (for the signatures of
   * ID tokens and logout tokens) use the milliseconds as given. Reading the body of a `req.auth.fetch()` response is not
   * timed: the app bounds it where it matters.
   * @default 5000
   */
  httpTimeout?: number;
  /**
   * Tolerated clock difference with the authorization server when checking ID-token times, in seconds.
   * @default 30
   */
  clockTolerance?: number;
  /**
   * Refresh the access token when it expires within this many seconds, so that it does not expire on its way to the
   * resource server. Never more than half of the token's issued lifetime is used, so short-lived tokens are not
   * refreshed on every call. `0` refreshes only once the token has expired.
   * @default 60
   * @example
   * ```ts
   * auth({ ...options, refreshSkew: 30 });
   * ```
   */
  refreshSkew?: number;
  /**
   * Called with every error the library answers for itself on its own routes (login, callback, logout, the
   * post-logout return, back-channel logout; on any request when `auth()` is mounted under a path or express-session is
   * missing), just before the answer goes out: the place to log or count
   * them. Messages and `toJSON()` never carry a token; `err.cause` is the underlying error (of token requests, a copy
   * with the token responses taken out). Not called for
   * `requireAuth()`'s 401/403 (the normal way to meet an anonymous user) nor for errors of the app's own routes, which
   * reach the app's error handling. An exception it throws, or a promise it returns that rejects, is ignored.
   * @default logs the errors with a 5xx status (failures on the app's side: discovery, a token endpoint refusing the
   * client, Redis down) with `console.error`, one line each without the query string; 4xx (a user's bad or stale
   * request) are not logged.
   * @example
   * ```ts
   * auth({ ...options, onError: (err, req) => logger.warn({ code: err.code, status: err.status, path: req.path, cause: err.cause }, err.message) });
   * ```
   */
  onError?: (err: AuthError, req: Request) => void;
}

/** The validated, normalised form of {@link AuthOptions} that the rest of the library reads. */
export interface ResolvedConfig {
  /** The issuer identifier; undefined for a `server` configured without one. */
  readonly issuer: URL | undefined;
  /** The hand-given endpoints; undefined when the metadata is discovered. */
  readonly server: ResolvedServer | undefined;
  readonly discovery: 'oidc' | 'oauth2';
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly clientAuthMethod: ClientAuthMethod;
  readonly privateKey: ResolvedPrivateKey | undefined;
  readonly fetchUser: FetchUser | undefined;
  readonly pushedAuthorizationRequests: boolean;
  readonly dpop: boolean;
  readonly redirectUri: URL;
  readonly callbackPath: string;
  readonly scope: string;
  readonly openid: boolean;
  readonly authorizationParams: Readonly<Record<string, string>>;
  readonly loginParams: LoginParams | undefined;
  readonly redis: Redis | Cluster | undefined;
  readonly keyPrefix: string;
  readonly allowInsecureRequests: boolean;
  readonly loginPath: string;
  readonly logoutPath: string;
  /** Undefined unless `idpLogout`. */
  readonly postLogoutPath: string | undefined;
  /** Undefined when back-channel logout is not mounted (no `redis`, or no `openid` scope). */
  readonly backchannelLogoutPath: string | undefined;
  readonly postLogoutRedirect: string;
  readonly idpLogout: boolean;
  readonly sessionCookieName: string;
  readonly sessionIndexTtl: number;
  readonly httpTimeout: number;
  readonly clockTolerance: number;
  readonly refreshSkew: number;
  readonly onError: (err: AuthError, req: Request) => void;
}

/** {@link ServerEndpoints} as URLs. */
export interface ResolvedServer {
  readonly issuer: URL | undefined;
  /** `issuer` exactly as given: ID tokens and RFC 9207 `iss` are compared as strings, and URL parsing adds a '/'. */
  readonly issuerIdentifier: string | undefined;
  readonly authorizationEndpoint: URL;
  readonly tokenEndpoint: URL;
  readonly revocationEndpoint: URL | undefined;
  readonly userinfoEndpoint: URL | undefined;
  readonly jwksUri: URL | undefined;
  readonly endSessionEndpoint: URL | undefined;
  readonly pushedAuthorizationRequestEndpoint: URL | undefined;
}

/** A checked `private_key_jwt` key, normalised to a private JWK (imported once, on first use). */
export interface ResolvedPrivateKey {
  readonly jwk: Readonly<JWK>;
  readonly kid: string;
  readonly alg: string;
  readonly audience: 'issuer' | 'token_endpoint';
}

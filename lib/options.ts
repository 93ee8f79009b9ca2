import type { Redis, Cluster } from 'ioredis';
import { sanitizeReturnTo } from './return-to.js';

/** How the client authenticates at the token endpoint. */
export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'none';

/**
 * Options of {@link auth}. Validated once, when `auth()` is called: a mistake is a `TypeError` at startup
 * that says how to fix it, never a failure on the first login.
 *
 * @example
 * ```ts
 * app.use(auth({
 *   issuer: 'https://idp.example.com',
 *   clientId: 'app',
 *   clientSecret: process.env.CLIENT_SECRET,
 *   redirectUri: 'https://app.example.com/callback',
 *   scope: 'openid email offline_access',
 *   redis,
 * }));
 * ```
 */
export interface AuthOptions {
  /** The issuer identifier. Its metadata is discovered from `/.well-known/openid-configuration` on first use. */
  issuer: string | URL;
  /** The client identifier registered at the authorization server. */
  clientId: string;
  /** The client secret. Omit it for a public client (PKCE only, `clientAuthMethod: 'none'`). */
  clientSecret?: string | undefined;
  /**
   * Token-endpoint client authentication.
   * @default `'client_secret_basic'` when `clientSecret` is set, otherwise `'none'`
   */
  clientAuthMethod?: ClientAuthMethod;
  /** Absolute callback URL, exactly as registered. Its path is where `GET` callback route is mounted. */
  redirectUri: string | URL;
  /**
   * Space-separated scopes.
   * @default `'openid'`
   */
  scope?: string;
  /** Extra authorization-request parameters (`prompt`, `audience`, `acr_values`, …). Protocol parameters the library sets itself are refused. */
  authorizationParams?: Record<string, string>;
  /** An ioredis client (or Cluster). Makes single-use checks and refresh single-flight hold across processes. */
  redis?: Redis | Cluster;
  /**
   * Prefix of every Redis key the library writes.
   * @default `'oauth-pkce:'`
   */
  keyPrefix?: string;
  /**
   * Allow `http:` URLs for the issuer and its endpoints. Only for development and tests.
   * @default false
   */
  allowInsecureRequests?: boolean;
  /** Route paths. The callback path is taken from `redirectUri`. */
  routes?: {
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
  };
  /**
   * Same-origin path the browser lands on after logout (local, and after the return from RP-initiated logout).
   * @default `'/'`
   */
  postLogoutRedirect?: string;
  /**
   * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): after the local logout, send the browser to the
   * server's `end_session_endpoint` to end the login there too. Needs `routes.postLogout` registered at the server.
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
   * Timeout of each request to the authorization server, in milliseconds.
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
}

/** The validated, normalised form of {@link AuthOptions} that the rest of the library reads. */
export interface ResolvedConfig {
  readonly issuer: URL;
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  readonly clientAuthMethod: ClientAuthMethod;
  readonly redirectUri: URL;
  readonly callbackPath: string;
  readonly scope: string;
  readonly openid: boolean;
  readonly authorizationParams: Readonly<Record<string, string>>;
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
}

const KNOWN_OPTIONS = [
  'issuer',
  'clientId',
  'clientSecret',
  'clientAuthMethod',
  'redirectUri',
  'scope',
  'authorizationParams',
  'redis',
  'keyPrefix',
  'allowInsecureRequests',
  'routes',
  'httpTimeout',
  'clockTolerance',
  'postLogoutRedirect',
  'idpLogout',
  'sessionCookieName',
  'sessionIndexTtl',
  'refreshSkew',
] as const satisfies ReadonlyArray<keyof AuthOptions>;

/** Parameters the library owns; letting `authorizationParams` set them would undo PKCE, state or nonce. */
const PROTECTED_PARAMS = new Set([
  'response_type',
  'client_id',
  'redirect_uri',
  'scope',
  'state',
  'nonce',
  'code_challenge',
  'code_challenge_method',
  'request',
  'request_uri',
  'response_mode',
]);

const CLIENT_AUTH_METHODS: readonly ClientAuthMethod[] = ['client_secret_basic', 'client_secret_post', 'none'];

function fail(message: string): never {
  throw new TypeError(`express-oauth-pkce: ${message}`);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function closest(name: string, candidates: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  return candidates.find((c) => c.toLowerCase() === lower || c.toLowerCase().includes(lower) || lower.includes(c.toLowerCase()));
}

function parseUrl(value: unknown, name: string, example: string): URL {
  if (!(typeof value === 'string' || value instanceof URL) || String(value) === '') {
    fail(`\`${name}\` is required: an absolute URL such as '${example}'.`);
  }
  let url: URL;
  try {
    url = new URL(String(value));
  } catch {
    fail(`\`${name}\` must be an absolute URL such as '${example}', got '${String(value)}'.`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    fail(`\`${name}\` must be an http(s) URL, got '${url.protocol}'.`);
  }
  if (url.username !== '' || url.password !== '') fail(`\`${name}\` must not contain credentials.`);
  return url;
}

function routePath(value: unknown, name: string, fallback: string): string {
  if (value === undefined) return fallback;
  // Matched literally, never as an Express pattern: refuse characters that would suggest otherwise (`:id`, `*`).
  if (typeof value !== 'string' || !/^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/.test(value)) {
    fail(`\`routes.${name}\` must be a plain path starting with '/' (letters, digits, '.', '_', '~', '-'), such as '${fallback}'.`);
  }
  return value;
}

function positiveNumber(value: unknown, name: string, fallback: number, unit: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    fail(`\`${name}\` must be a non-negative number of ${unit}, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/**
 * Validates {@link AuthOptions} and resolves defaults. Throws a `TypeError` naming the fix.
 * @internal
 */
export function resolveOptions(input: unknown): ResolvedConfig {
  if (!isPlainObject(input)) fail('auth() takes an options object: auth({ issuer, clientId, redirectUri }).');
  const options = input as Partial<AuthOptions> & Record<string, unknown>;

  for (const key of Object.keys(options)) {
    if (!(KNOWN_OPTIONS as readonly string[]).includes(key)) {
      const hint = closest(key, KNOWN_OPTIONS);
      fail(`unknown option \`${key}\`${hint ? ` (did you mean \`${hint}\`?)` : ''}. Known options: ${KNOWN_OPTIONS.join(', ')}.`);
    }
  }

  const allowInsecureRequests = options.allowInsecureRequests ?? false;
  if (typeof allowInsecureRequests !== 'boolean') fail('`allowInsecureRequests` must be a boolean.');

  const issuer = parseUrl(options.issuer, 'issuer', 'https://idp.example.com');
  if (issuer.protocol === 'http:' && !allowInsecureRequests) {
    fail(`\`issuer\` '${issuer.href}' uses http:. Use https:, or set \`allowInsecureRequests: true\` in development and tests only.`);
  }
  if (issuer.search !== '' || issuer.hash !== '') fail('`issuer` must not have a query or fragment (RFC 8414 §2).');

  if (typeof options.clientId !== 'string' || options.clientId === '') {
    fail('`clientId` is required: the client identifier registered at the authorization server.');
  }

  const clientSecret = options.clientSecret;
  if (clientSecret !== undefined && (typeof clientSecret !== 'string' || clientSecret === '')) {
    fail('`clientSecret` must be a non-empty string; omit it for a public client.');
  }

  const clientAuthMethod = options.clientAuthMethod ?? (clientSecret === undefined ? 'none' : 'client_secret_basic');
  if (!CLIENT_AUTH_METHODS.includes(clientAuthMethod)) {
    fail(`\`clientAuthMethod\` must be one of ${CLIENT_AUTH_METHODS.join(', ')}, got ${JSON.stringify(clientAuthMethod)}.`);
  }
  if (clientAuthMethod === 'none' && clientSecret !== undefined) {
    fail("`clientAuthMethod: 'none'` is for public clients: remove `clientSecret`, or use 'client_secret_basic'.");
  }
  if (clientAuthMethod !== 'none' && clientSecret === undefined) {
    fail(`\`clientAuthMethod: '${clientAuthMethod}'\` needs \`clientSecret\`.`);
  }

  const redirectUri = parseUrl(options.redirectUri, 'redirectUri', 'https://app.example.com/callback');
  if (redirectUri.hash !== '') fail('`redirectUri` must not have a fragment (RFC 6749 §3.1.2).');
  if (redirectUri.protocol === 'http:' && !allowInsecureRequests && !isLoopback(redirectUri.hostname)) {
    fail(`\`redirectUri\` '${redirectUri.href}' uses http:. Use https:, or set \`allowInsecureRequests: true\` in development.`);
  }

  const scope = options.scope ?? 'openid';
  if (typeof scope !== 'string' || scope.trim() === '' || !/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/.test(scope)) {
    fail(`\`scope\` must be space-separated scope tokens such as 'openid email', got ${JSON.stringify(scope)}.`);
  }

  const authorizationParams = options.authorizationParams ?? {};
  if (!isPlainObject(authorizationParams)) fail('`authorizationParams` must be an object of string values.');
  for (const [key, value] of Object.entries(authorizationParams)) {
    if (PROTECTED_PARAMS.has(key)) {
      fail(`\`authorizationParams.${key}\` is set by the library itself; remove it${key === 'scope' ? ' and use the `scope` option' : ''}.`);
    }
    if (typeof value !== 'string') fail(`\`authorizationParams.${key}\` must be a string.`);
  }

  const redis = options.redis;
  if (redis !== undefined && (typeof redis !== 'object' || redis === null || typeof (redis as { set?: unknown }).set !== 'function')) {
    fail('`redis` must be an ioredis client: new Redis(process.env.REDIS_URL).');
  }

  const keyPrefix = options.keyPrefix ?? 'oauth-pkce:';
  if (typeof keyPrefix !== 'string') fail('`keyPrefix` must be a string.');

  const routes = options.routes ?? {};
  if (!isPlainObject(routes)) fail('`routes` must be an object: { login, logout }.');
  for (const key of Object.keys(routes)) {
    if (!(ROUTE_NAMES as readonly string[]).includes(key)) {
      fail(`unknown route \`routes.${key}\`; known: ${ROUTE_NAMES.join(', ')} (the callback path comes from \`redirectUri\`).`);
    }
  }
  const loginPath = routePath(routes.login, 'login', '/login');
  const logoutPath = routePath(routes.logout, 'logout', '/logout');
  const callbackPath = redirectUri.pathname;
  const logout = resolveLogoutOptions(options, routes, redis !== undefined, scope.split(' ').includes('openid'));
  const paths = [loginPath, logoutPath, callbackPath, logout.postLogoutPath, logout.backchannelLogoutPath].filter((p) => p !== undefined);
  if (new Set(paths).size !== paths.length) {
    fail(`the route paths must differ: ${paths.join(', ')} (login, logout, callback${paths.length > 3 ? ' and the logout return routes' : ''}).`);
  }

  const httpTimeout = positiveNumber(options.httpTimeout, 'httpTimeout', 5000, 'milliseconds');
  if (httpTimeout < 1) fail('`httpTimeout` must be at least 1 millisecond.');
  const clockTolerance = positiveNumber(options.clockTolerance, 'clockTolerance', 30, 'seconds');
  const refreshSkew = positiveNumber(options.refreshSkew, 'refreshSkew', 60, 'seconds');

  return Object.freeze({
    issuer,
    clientId: options.clientId,
    clientSecret,
    clientAuthMethod,
    redirectUri,
    callbackPath,
    scope,
    openid: scope.split(' ').includes('openid'),
    authorizationParams: Object.freeze({ ...authorizationParams }),
    redis,
    keyPrefix,
    allowInsecureRequests,
    loginPath,
    logoutPath,
    ...logout,
    httpTimeout,
    clockTolerance,
    refreshSkew,
  });
}

const ROUTE_NAMES = ['login', 'logout', 'postLogout', 'backchannelLogout'] as const;

/** The logout options (`idpLogout`, `postLogoutRedirect`, the return routes, the cookie name, the index TTL). */
function resolveLogoutOptions(
  options: Partial<AuthOptions>,
  routes: NonNullable<AuthOptions['routes']>,
  hasRedis: boolean,
  openid: boolean,
) {
  const idpLogout = options.idpLogout ?? false;
  if (typeof idpLogout !== 'boolean') fail('`idpLogout` must be a boolean.');
  if (routes.postLogout !== undefined && !idpLogout) {
    fail('`routes.postLogout` is the return route of RP-initiated logout: set `idpLogout: true` too, or remove it.');
  }
  const postLogoutPath = idpLogout ? routePath(routes.postLogout, 'postLogout', '/logout/callback') : undefined;

  if (routes.backchannelLogout !== undefined && !(hasRedis && openid)) {
    fail(
      '`routes.backchannelLogout` needs `redis` (the index of sessions to end lives there, shared by every process) and an `openid` scope (logout tokens name the `sub`/`sid` of the ID token).',
    );
  }
  const backchannelLogoutPath = hasRedis && openid ? routePath(routes.backchannelLogout, 'backchannelLogout', '/backchannel-logout') : undefined;

  const postLogoutRedirect = options.postLogoutRedirect ?? '/';
  if (typeof postLogoutRedirect !== 'string' || sanitizeReturnTo(postLogoutRedirect) !== postLogoutRedirect) {
    fail(`\`postLogoutRedirect\` must be a same-origin path such as '/' or '/goodbye', got ${JSON.stringify(postLogoutRedirect)}.`);
  }

  const sessionCookieName = options.sessionCookieName ?? 'connect.sid';
  // RFC 6265 §4.1.1 cookie-name is an RFC 2616 token.
  if (typeof sessionCookieName !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(sessionCookieName)) {
    fail("`sessionCookieName` must be express-session's cookie name (its `name` option), such as 'connect.sid'.");
  }

  const sessionIndexTtl = positiveNumber(options.sessionIndexTtl, 'sessionIndexTtl', 14 * 24 * 60 * 60, 'seconds');
  if (!Number.isInteger(sessionIndexTtl) || sessionIndexTtl < 60) fail('`sessionIndexTtl` must be a whole number of seconds, at least 60.');

  return { postLogoutPath, backchannelLogoutPath, postLogoutRedirect, idpLogout, sessionCookieName, sessionIndexTtl };
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

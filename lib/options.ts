import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { Request } from 'express';
import type { JWK } from 'jose';
import type { AuthError } from './errors.js';
import { sanitizeReturnTo } from './return-to.js';
import { warn, WarningCode } from './warnings.js';
import type { AuthOptions, ClientAuthMethod, ResolvedConfig, ResolvedPrivateKey, ResolvedServer, ServerEndpoints } from './options-types.js';

// The option types live in options-types.ts; this file turns options into a ResolvedConfig, once, with the checks.
export type { ClientAuthMethod, ServerEndpoints, ClientPrivateKeyOptions, ClientPrivateKey, FetchUser, LoginParams, AuthOptions, RouteOptions, ResolvedConfig, ResolvedServer, ResolvedPrivateKey } from './options-types.js';

const KNOWN_OPTIONS = [
  'issuer',
  'server',
  'discovery',
  'clientId',
  'clientSecret',
  'clientAuthMethod',
  'privateKey',
  'fetchUser',
  'pushedAuthorizationRequests',
  'dpop',
  'redirectUri',
  'scope',
  'authorizationParams',
  'loginParams',
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
  'onError',
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
  'dpop_jkt',
]);

const CLIENT_AUTH_METHODS: readonly ClientAuthMethod[] = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'];

function fail(message: string): never {
  throw new TypeError(`express-oauth-pkce: ${message}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Names other libraries and the protocol use for an option (compared without case, '_' or '-'): Passport's
 * `callbackURL`, `authorizationURL`, `tokenURL`; express-openid-connect's `issuerBaseURL`; OAuth metadata names.
 */
const OPTION_ALIASES: Readonly<Record<string, string>> = {
  callbackurl: 'redirectUri',
  callbackuri: 'redirectUri',
  callback: 'redirectUri',
  redirecturls: 'redirectUri',
  redirecturis: 'redirectUri',
  issuerbaseurl: 'issuer',
  issuerurl: 'issuer',
  authority: 'issuer',
  authorizationurl: 'server',
  tokenurl: 'server',
  tokenendpointauthmethod: 'clientAuthMethod',
  postlogoutredirecturi: 'postLogoutRedirect',
  postlogoutredirecturl: 'postLogoutRedirect',
};

const SERVER_ALIASES: Readonly<Record<string, string>> = {
  authorizationurl: 'authorizationEndpoint',
  authorizeurl: 'authorizationEndpoint',
  tokenurl: 'tokenEndpoint',
  userinfourl: 'userinfoEndpoint',
  profileurl: 'userinfoEndpoint',
  jwks: 'jwksUri',
  jwksurl: 'jwksUri',
  logouturl: 'endSessionEndpoint',
  endsessionurl: 'endSessionEndpoint',
  revocationurl: 'revocationEndpoint',
  parendpoint: 'pushedAuthorizationRequestEndpoint',
};

const normalized = (name: string) => name.toLowerCase().replace(/[-_]/g, '');

/** Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The option `name` was probably meant to be: a known alias, the same name in another case or with '_' (`client_id`),
 * a typo (at most 2 edits: `redirectUrl`), or a name containing or contained in it (`secret`).
 */
function closest(name: string, candidates: readonly string[], aliases: Readonly<Record<string, string>> = {}): string | undefined {
  const key = normalized(name);
  const alias = aliases[key];
  if (alias !== undefined && candidates.includes(alias)) return alias;
  const exact = candidates.find((c) => normalized(c) === key);
  if (exact !== undefined) return exact;
  const limit = key.length <= 4 ? 1 : 2;
  const scored = candidates.map((c) => ({ c, distance: editDistance(key, normalized(c)) })).filter(({ distance }) => distance <= limit);
  scored.sort((x, y) => x.distance - y.distance);
  if (scored[0] !== undefined) return scored[0].c;
  // The closest in length: `post_logout_redirect_uri` is `postLogoutRedirect` and `redirect` is `redirectUri`.
  const related = candidates.filter((c) => normalized(c).includes(key) || key.includes(normalized(c)));
  return related.sort((x, y) => Math.abs(x.length - key.length) - Math.abs(y.length - key.length))[0];
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

/**
 * `max_age` (OpenID Connect Core §3.1.2.1) is checked at the callback against the ID token's `auth_time`, so it must be
 * a number openid-client can compare, and there must be an ID token to carry `auth_time`.
 */
function maxAgeProblem(value: unknown, openid: boolean, where: string): string | undefined {
  const shape = "a whole number of seconds written as a string, such as '0' (always log in again) or '3600'";
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    return `\`${where}.max_age\` must be ${shape}: write '${String(value)}' instead of ${String(value)}.`;
  }
  if (typeof value !== 'string' || !/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    return `\`${where}.max_age\` must be ${shape}, got ${shown(value)}.`;
  }
  if (!openid) {
    return `\`${where}.max_age\` is checked against the ID token's \`auth_time\`, and without 'openid' in \`scope\` there is no ID token: add 'openid' to \`scope\`, or remove \`max_age\`.`;
  }
  return undefined;
}

/**
 * A value as a message names it: JSON when JSON can write it, else its type. A BigInt or a cycle makes JSON.stringify
 * throw, which at a login (`loginParams`) would be a bare TypeError instead of the `misconfigured` answer.
 */
function shown(value: unknown): string {
  try {
    return JSON.stringify(value) ?? typeof value;
  } catch {
    return typeof value === 'bigint' ? `${value}n` : typeof value;
  }
}

/**
 * What is wrong with extra authorization-request parameters (`authorizationParams` at startup, what `loginParams`
 * returned at a login), named after `where`; undefined when nothing is.
 */
export function authorizationParamsProblem(params: unknown, openid: boolean, where: string): string | undefined {
  if (!isRecord(params)) return `\`${where}\` must be an object of string values.`;
  for (const [key, value] of Object.entries(params)) {
    if (PROTECTED_PARAMS.has(key)) {
      return `\`${where}.${key}\` is set by the library itself; remove it${key === 'scope' ? ' and use the `scope` option' : ''}.`;
    }
    const problem = key === 'max_age' ? maxAgeProblem(value, openid, where) : undefined;
    if (problem !== undefined) return problem;
    if (typeof value !== 'string') return `\`${where}.${key}\` must be a string.`;
  }
  return undefined;
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
  if (!isRecord(input)) fail('auth() takes an options object: auth({ issuer, clientId, redirectUri }).');
  const options = input as Partial<AuthOptions> & Record<string, unknown>;

  for (const key of Object.keys(options)) {
    if (!(KNOWN_OPTIONS as readonly string[]).includes(key)) {
      const hint = closest(key, KNOWN_OPTIONS, OPTION_ALIASES);
      fail(`unknown option \`${key}\`${hint ? ` (did you mean \`${hint}\`?)` : ''}. Known options: ${KNOWN_OPTIONS.join(', ')}.`);
    }
  }

  const allowInsecureRequests = options.allowInsecureRequests ?? false;
  if (typeof allowInsecureRequests !== 'boolean') fail('`allowInsecureRequests` must be a boolean.');

  const { issuer, server, discovery } = resolveServerOptions(options, allowInsecureRequests);

  if (typeof options.clientId !== 'string' || options.clientId === '') {
    fail('`clientId` is required: the client identifier registered at the authorization server.');
  }

  // Present but undefined is almost always `clientSecret: process.env.CLIENT_SECRET` with the variable unset. Taken as
  // a public client, the mistake would show only after the user logged in, as invalid_client at the token endpoint.
  if ('clientSecret' in options && options.clientSecret === undefined) {
    fail('`clientSecret` is undefined (an unset environment variable?): pass the secret, or leave the option out for a public client.');
  }
  if ('privateKey' in options && options.privateKey === undefined) {
    fail('`privateKey` is undefined (an unset environment variable, or a file not read?): pass the key, or leave the option out.');
  }
  const clientSecret = options.clientSecret;
  if (clientSecret !== undefined && (typeof clientSecret !== 'string' || clientSecret === '')) {
    fail('`clientSecret` must be a non-empty string; omit it for a public client.');
  }

  const clientAuthMethod =
    options.clientAuthMethod ?? (options.privateKey !== undefined ? 'private_key_jwt' : clientSecret === undefined ? 'none' : 'client_secret_basic');
  if (!CLIENT_AUTH_METHODS.includes(clientAuthMethod)) {
    fail(`\`clientAuthMethod\` must be one of ${CLIENT_AUTH_METHODS.join(', ')}, got ${JSON.stringify(clientAuthMethod)}.`);
  }
  if (clientAuthMethod === 'none' && clientSecret !== undefined) {
    fail("`clientAuthMethod: 'none'` is for public clients: remove `clientSecret`, or use 'client_secret_basic'.");
  }
  if (clientAuthMethod === 'private_key_jwt') {
    if (clientSecret !== undefined) fail("`clientAuthMethod: 'private_key_jwt'` signs with `privateKey`: remove `clientSecret`.");
    if (options.privateKey === undefined) fail("`clientAuthMethod: 'private_key_jwt'` needs `privateKey` (a private JWK with `kid`, or { key: PEM, kid }).");
  } else {
    if (options.privateKey !== undefined) fail(`\`privateKey\` is only used with \`clientAuthMethod: 'private_key_jwt'\`, not '${clientAuthMethod}'.`);
    if (clientAuthMethod !== 'none' && clientSecret === undefined) fail(`\`clientAuthMethod: '${clientAuthMethod}'\` needs \`clientSecret\`.`);
  }
  const privateKey = clientAuthMethod === 'private_key_jwt' ? parsePrivateKey(options.privateKey) : undefined;

  const fetchUser = options.fetchUser;
  if (fetchUser !== undefined && typeof fetchUser !== 'function') {
    fail('`fetchUser` must be a function: async (tokens, { fetch }) => user object.');
  }
  const pushedAuthorizationRequests = options.pushedAuthorizationRequests ?? false;
  if (typeof pushedAuthorizationRequests !== 'boolean') fail('`pushedAuthorizationRequests` must be a boolean.');
  if (pushedAuthorizationRequests && server !== undefined && server.pushedAuthorizationRequestEndpoint === undefined) {
    fail('`pushedAuthorizationRequests: true` needs `server.pushedAuthorizationRequestEndpoint`.');
  }
  const dpop = options.dpop ?? false;
  if (typeof dpop !== 'boolean') fail('`dpop` must be a boolean.');

  const redirectUri = parseUrl(options.redirectUri, 'redirectUri', 'https://app.example.com/callback');
  // `href`, not `hash`/`search`: a bare '#' or '?' leaves those empty but stays in the redirect_uri sent.
  if (redirectUri.href.includes('#')) fail('`redirectUri` must not have a fragment (RFC 6749 §3.1.2).');
  if (redirectUri.href.includes('?')) {
    // The token request repeats redirect_uri as origin + path (the callback's own query is the response), so a query
    // here would make every code exchange fail with invalid_grant.
    fail(
      `\`redirectUri\` must not have a query string, got '${asWritten(options.redirectUri)}': the callback is matched by its exact path and the token request sends the redirect URI without it. Register a plain path such as '${redirectUri.origin}${redirectUri.pathname === '/' ? '/callback' : redirectUri.pathname}'; per-login data travels in the login transaction (\`returnTo\`), keyed by \`state\`.`,
    );
  }
  if (redirectUri.pathname === '/') {
    fail(
      `\`redirectUri\` '${asWritten(options.redirectUri)}' has the path '/', which would make every visit to the home page a callback (and fail with invalid_state): give the callback a path of its own, such as '${redirectUri.origin}/callback'.`,
    );
  }
  if (redirectUri.protocol === 'http:' && !allowInsecureRequests && !isLoopback(redirectUri.hostname)) {
    fail(`\`redirectUri\` '${asWritten(options.redirectUri)}' uses http:. Use https:, or set \`allowInsecureRequests: true\` in development.`);
  }
  // redirect_uri goes out as `href`, which URL parsing normalises (host case, default port, percent-encoding, dot
  // segments, spaces). Servers compare it with the registered string exactly (RFC 9700 §4.1.3), so a string that
  // parsing changes would be refused there: ask for the form that is sent. A URL object is sent as its own `href`.
  if (typeof options.redirectUri === 'string' && options.redirectUri !== redirectUri.href) {
    fail(
      `\`redirectUri\` '${options.redirectUri}' would be sent as '${redirectUri.href}' (URL parsing normalises it), and servers compare the redirect URI with the registered one exactly (RFC 9700 §4.1.3): register and configure '${redirectUri.href}'.`,
    );
  }

  const scope = options.scope ?? 'openid';
  if (typeof scope !== 'string' || scope.trim() === '' || !/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/.test(scope)) {
    fail(`\`scope\` must be space-separated scope tokens such as 'openid email', got ${JSON.stringify(scope)}.`);
  }
  const openid = scope.split(' ').includes('openid');
  if (openid && server !== undefined && server.issuer === undefined) {
    fail("`scope` has 'openid', so ID tokens are checked against the issuer: set `server.issuer`, or remove 'openid' from `scope` for a plain OAuth 2.0 server.");
  }
  if (openid && server !== undefined && server.jwksUri === undefined) {
    fail("`scope` has 'openid', so ID-token signatures are verified with the server's keys: set `server.jwksUri`, or remove 'openid' from `scope` for a plain OAuth 2.0 server.");
  }

  const authorizationParams = options.authorizationParams ?? {};
  const paramsProblem = authorizationParamsProblem(authorizationParams, openid, 'authorizationParams');
  if (paramsProblem !== undefined) fail(paramsProblem);
  const loginParams = options.loginParams;
  if (loginParams !== undefined && typeof loginParams !== 'function') {
    fail("`loginParams` must be a function: (req) => ({ prompt: 'select_account' }) or undefined, for each login.");
  }

  const redis = options.redis;
  if (redis !== undefined) checkRedis(redis);

  const keyPrefix = options.keyPrefix ?? 'oauth-pkce:';
  if (typeof keyPrefix !== 'string') fail('`keyPrefix` must be a string.');

  const routes = options.routes ?? {};
  if (!isRecord(routes)) fail('`routes` must be an object: { login, logout }.');
  for (const key of Object.keys(routes)) {
    if (!(ROUTE_NAMES as readonly string[]).includes(key)) {
      fail(`unknown route \`routes.${key}\`; known: ${ROUTE_NAMES.join(', ')} (the callback path comes from \`redirectUri\`).`);
    }
  }
  const loginPath = routePath(routes.login, 'login', '/login');
  const logoutPath = routePath(routes.logout, 'logout', '/logout');
  const callbackPath = redirectUri.pathname;
  const logout = resolveLogoutOptions(options, routes, redis !== undefined, scope.split(' ').includes('openid'));
  // As with PAR: by hand, a missing endpoint is known now, and idpLogout would only ever log out locally.
  if (logout.idpLogout && server !== undefined && server.endSessionEndpoint === undefined) {
    fail(
      "`idpLogout: true` sends the browser to the server's end_session_endpoint, and `server` names none: set `server.endSessionEndpoint`, or remove `idpLogout` for a server without one (local logout only).",
    );
  }
  checkRoutesDiffer(routes, [
    ['login', loginPath],
    ['logout', logoutPath],
    ['callback', callbackPath],
    ['postLogout', logout.postLogoutPath],
    ['backchannelLogout', logout.backchannelLogoutPath],
  ]);
  // These routes answer a plain visit with an error page (invalid_state, or 405 for the POST-only ones), so landing
  // there after logout would greet every user with one.
  const landing = new URL(logout.postLogoutRedirect, 'http://landing.invalid').pathname;
  const unfit = { callback: callbackPath, logout: logoutPath, postLogout: logout.postLogoutPath, backchannelLogout: logout.backchannelLogoutPath };
  for (const [name, path] of Object.entries(unfit)) {
    if (path === landing) {
      fail(
        `\`postLogoutRedirect\` '${logout.postLogoutRedirect}' is the ${name === 'callback' ? 'callback path of `redirectUri`' : `\`routes.${name}\` path`}, which answers a plain visit with an error: land on a page of the app instead, such as '/'.`,
      );
    }
  }

  const httpTimeout = positiveNumber(options.httpTimeout, 'httpTimeout', 5000, 'milliseconds');
  if (httpTimeout < 1) fail('`httpTimeout` must be at least 1 millisecond.');
  const clockTolerance = positiveNumber(options.clockTolerance, 'clockTolerance', 30, 'seconds');
  const refreshSkew = positiveNumber(options.refreshSkew, 'refreshSkew', 60, 'seconds');
  const onError = options.onError ?? logServerErrors;
  if (typeof onError !== 'function') fail('`onError` must be a function: (err, req) => void, called with each error the library answers.');

  // Last, once nothing can fail any more: the warning goes out once per process, not for a configuration that never ran.
  if (allowInsecureRequests && process.env.NODE_ENV === 'production') warnInsecureRequests(issuer, server, redirectUri);

  return Object.freeze({
    issuer,
    server,
    discovery,
    clientId: options.clientId,
    clientSecret,
    clientAuthMethod,
    privateKey,
    fetchUser,
    pushedAuthorizationRequests,
    dpop,
    redirectUri,
    callbackPath,
    scope,
    openid,
    authorizationParams: Object.freeze({ ...(authorizationParams as Record<string, string>) }),
    loginParams,
    redis,
    keyPrefix,
    allowInsecureRequests,
    loginPath,
    logoutPath,
    ...logout,
    httpTimeout,
    clockTolerance,
    refreshSkew,
    onError,
  });
}

/** The default `onError`: failures on the app's side (5xx) are logged, a user's bad or stale request (4xx) is not. */
function logServerErrors(err: AuthError, req: Request): void {
  if (err.status < 500) return;
  console.error(`express-oauth-pkce: ${req.method} ${req.baseUrl}${req.path}: ${err.code} (${err.status}): ${err.message}`);
}

const ROUTE_NAMES = ['login', 'logout', 'postLogout', 'backchannelLogout'] as const;

/** Each mounted route needs a path of its own; the message names the options that collide, defaults included. */
function checkRoutesDiffer(routes: NonNullable<AuthOptions['routes']>, mounted: ReadonlyArray<readonly [string, string | undefined]>): void {
  const seen = new Map<string, string[]>();
  for (const [name, path] of mounted) {
    if (path === undefined) continue;
    const label =
      name === 'callback'
        ? 'the callback path of `redirectUri`'
        : `\`routes.${name}\`${routes[name as (typeof ROUTE_NAMES)[number]] === undefined ? ' (by default)' : ''}`;
    seen.set(path, [...(seen.get(path) ?? []), label]);
  }
  for (const [path, labels] of seen) {
    if (labels.length > 1) {
      const names = `${labels.slice(0, -1).join(', ')} and ${labels.at(-1)!}`;
      fail(`${names} are ${labels.length === 2 ? 'both' : 'all'} '${path}': the route paths must differ, so give one of them another path.`);
    }
  }
}

/** `defineCommand` is ioredis's own (node-redis has none); the rest are what the library calls (once, refresh, token store, logout index). */
const IOREDIS_METHODS = ['defineCommand', 'set', 'get', 'del', 'eval', 'multi', 'sadd', 'srem', 'smembers'] as const;

/**
 * The library calls Redis the ioredis way: `set(key, value, 'PX', ms, 'NX')` claims a `state` once, `eval(script,
 * numKeys, ...)` runs its scripts. node-redis has a `set` too but reads those arguments differently, so anything else
 * would pass a `set` check and then silently break single use.
 */
function checkRedis(redis: unknown): void {
  const ioredis =
    "`redis` must be an ioredis client, a `Redis` or `Cluster` from 'ioredis' (the one connect-redis 8 takes too): import { Redis } from 'ioredis'; new Redis('redis://127.0.0.1:6379')";
  if (typeof redis !== 'object' || redis === null) fail(`${ioredis}. Got ${typeof redis === 'string' ? 'a string' : JSON.stringify(redis) ?? typeof redis}.`);
  const client = redis as Record<string, unknown>;
  const missing = IOREDIS_METHODS.filter((name) => typeof client[name] !== 'function');
  if (missing.length === 0) return;
  const nodeRedis = ['sAdd', 'SADD', 'sendCommand'].some((name) => typeof client[name] === 'function');
  fail(
    nodeRedis
      ? `${ioredis}. This looks like a node-redis client: it has no ${missing.join(', ')}, and its set() and eval() read the arguments the library passes (set(key, value, 'PX', ms, 'NX')) differently, which would silently break single use of \`state\`.`
      : `${ioredis}. This object has no ${missing.join(', ')}.`,
  );
}

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

/**
 * `allowInsecureRequests` is for development and tests; in production it lets codes, tokens and the client secret
 * travel over plain http. Not refused (a staging setup may run with NODE_ENV=production on purpose), but said once per
 * process, at startup, with the http: URLs it lets through.
 */
function warnInsecureRequests(issuer: URL | undefined, server: ResolvedServer | undefined, redirectUri: URL): void {
  const urls = [issuer, ...(server === undefined ? [] : Object.values(server)), redirectUri].filter((u): u is URL => u instanceof URL);
  const http = [...new Set(urls.filter((u) => u.protocol === 'http:').map((u) => u.href))];
  warn(
    WarningCode.INSECURE_REQUESTS,
    `\`allowInsecureRequests: true\` with NODE_ENV=production: codes, tokens and the client secret may travel over plain http (to the authorization server, and back to \`redirectUri\`), where they can be read and changed on the way${http.length > 0 ? ` (http: here: ${http.join(', ')})` : ' (every configured URL is https: now, but endpoints the metadata names may not be)'}. Use https: URLs and remove \`allowInsecureRequests\`: it is meant for development and tests.`,
  );
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}

/** Messages quote a URL option as it was written (a string), not as parsed: parsing adds a '/' to a bare origin. */
function asWritten(value: unknown): string {
  return String(value);
}

function httpsUnlessAllowed(url: URL, given: unknown, name: string, allowInsecureRequests: boolean): URL {
  if (url.protocol === 'http:' && !allowInsecureRequests) {
    fail(`\`${name}\` '${asWritten(given)}' uses http:. Use https:, or set \`allowInsecureRequests: true\` in development and tests only.`);
  }
  return url;
}

function parseIssuer(value: unknown, name: string, allowInsecureRequests: boolean): URL {
  const issuer = httpsUnlessAllowed(parseUrl(value, name, 'https://idp.example.com'), value, name, allowInsecureRequests);
  // `href`, not `search`/`hash`: a bare '?' or '#' leaves those empty but stays in the identifier that is compared
  // with the metadata's `issuer` and with `iss`, so every login would fail far from here.
  if (issuer.href.includes('?') || issuer.href.includes('#')) fail(`\`${name}\` must not have a query or fragment (RFC 8414 §2).`);
  // openid-client takes a URL with '/.well-known/' in it for the metadata document itself, fetches it as is, and then
  // skips the comparison of the metadata's `issuer` with the configured one (RFC 8414 §3.3): metadata naming any
  // issuer would be accepted. An issuer identifier never contains it, so this is the document URL given by mistake.
  if (issuer.href.includes('/.well-known/')) fail(wellKnownMessage(issuer, String(value), name));
  return issuer;
}

/** What to write instead of a metadata document URL given as the issuer. */
function wellKnownMessage(url: URL, given: string, name: string): string {
  const oidc = /^(.*?)\/\.well-known\/openid-configuration\/?$/.exec(url.pathname);
  const oauth2 = /^\/\.well-known\/oauth-authorization-server(\/.*)?$/.exec(url.pathname);
  const identifier = oidc ? `${url.origin}${oidc[1]}` : oauth2 ? `${url.origin}${oauth2[1] ?? ''}` : undefined;
  const why =
    name === 'issuer'
      ? ' (the library derives the document URL from it; given the document URL, openid-client would not check that the metadata names this issuer, and would accept metadata naming any issuer)'
      : ' (ID tokens carry the issuer identifier in `iss`, never a document URL)';
  const instead =
    identifier === undefined
      ? "the URL without its '/.well-known/…' part"
      : `'${identifier}'${oauth2 && name === 'issuer' ? ", with `discovery: 'oauth2'`" : ''}, exactly as the metadata's \`issuer\` writes it`;
  return `\`${name}\` '${given}' is a '/.well-known/' document URL, not an issuer identifier: give the issuer identifier, not the discovery document URL${why}. Here that would be ${instead}.`;
}

const SERVER_ENDPOINTS = [
  ['authorizationEndpoint', true],
  ['tokenEndpoint', true],
  ['revocationEndpoint', false],
  ['userinfoEndpoint', false],
  ['jwksUri', false],
  ['endSessionEndpoint', false],
  ['pushedAuthorizationRequestEndpoint', false],
] as const satisfies ReadonlyArray<readonly [keyof ServerEndpoints, boolean]>;

/** `issuer` (discovered) or `server` (by hand): exactly one of the two. */
function resolveServerOptions(
  options: Partial<AuthOptions>,
  allowInsecureRequests: boolean,
): { issuer: URL | undefined; server: ResolvedServer | undefined; discovery: 'oidc' | 'oauth2' } {
  const hasIssuer = options.issuer !== undefined;
  const hasServer = options.server !== undefined;
  if (hasIssuer === hasServer) {
    fail(
      hasIssuer
        ? 'give either `issuer` (metadata is discovered) or `server` (endpoints by hand), not both; put the issuer identifier in `server.issuer`.'
        : "`issuer` is required: an absolute URL such as 'https://idp.example.com' (or, for a server without discovery, `server: { authorizationEndpoint, tokenEndpoint }`).",
    );
  }
  if (options.discovery !== undefined && options.discovery !== 'oidc' && options.discovery !== 'oauth2') {
    fail(`\`discovery\` must be 'oidc' or 'oauth2', got ${JSON.stringify(options.discovery)}.`);
  }
  if (hasIssuer) {
    return { issuer: parseIssuer(options.issuer, 'issuer', allowInsecureRequests), server: undefined, discovery: options.discovery ?? 'oidc' };
  }
  if (options.discovery !== undefined) fail('`discovery` applies to `issuer`; with `server` the endpoints are given by hand and nothing is discovered.');
  const input = options.server;
  if (!isRecord(input)) fail('`server` must be an object: { authorizationEndpoint, tokenEndpoint, ... }.');
  const known = ['issuer', ...SERVER_ENDPOINTS.map(([name]) => name)];
  for (const key of Object.keys(input)) {
    if (!known.includes(key)) {
      const hint = closest(key, known, SERVER_ALIASES);
      fail(`unknown option \`server.${key}\`${hint ? ` (did you mean \`server.${hint}\`?)` : ''}. Known: ${known.join(', ')}.`);
    }
  }
  const endpoints: Record<string, URL | undefined> = {};
  for (const [name, required] of SERVER_ENDPOINTS) {
    const value = input[name];
    if (value === undefined && !required) continue;
    const url = httpsUnlessAllowed(parseUrl(value, `server.${name}`, `https://idp.example.com/${name}`), value, `server.${name}`, allowInsecureRequests);
    if (url.href.includes('#')) fail(`\`server.${name}\` must not have a fragment.`);
    endpoints[name] = url;
  }
  const issuer = input.issuer === undefined ? undefined : parseIssuer(input.issuer, 'server.issuer', allowInsecureRequests);
  // Nothing is discovered here, so this value is the `iss` ID tokens must carry, compared as a string. A URL object
  // always ends a bare origin with '/', and many servers write their issuer without it: rather than guess, ask.
  if (input.issuer instanceof URL && issuer?.pathname === '/') {
    fail(
      `\`server.issuer\` is compared exactly with the \`iss\` of ID tokens, and a URL object cannot tell '${issuer.origin}' from '${issuer.origin}/' (it always adds the '/'): give it as a string, exactly as the server writes its issuer.`,
    );
  }
  return {
    issuer,
    server: Object.freeze({
      issuer,
      issuerIdentifier: issuer === undefined ? undefined : String(input.issuer),
      authorizationEndpoint: endpoints.authorizationEndpoint as URL,
      tokenEndpoint: endpoints.tokenEndpoint as URL,
      revocationEndpoint: endpoints.revocationEndpoint,
      userinfoEndpoint: endpoints.userinfoEndpoint,
      jwksUri: endpoints.jwksUri,
      endSessionEndpoint: endpoints.endSessionEndpoint,
      pushedAuthorizationRequestEndpoint: endpoints.pushedAuthorizationRequestEndpoint,
    }),
    discovery: 'oidc',
  };
}

/** Algorithms a key type can sign with; the first is the default. */
function algorithmsFor(jwk: JWK): readonly string[] {
  switch (jwk.kty) {
    case 'RSA':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'EC':
      return jwk.crv === 'P-256' ? ['ES256'] : jwk.crv === 'P-384' ? ['ES384'] : jwk.crv === 'P-521' ? ['ES512'] : [];
    case 'OKP':
      return jwk.crv === 'Ed25519' ? ['EdDSA', 'Ed25519'] : [];
    default:
      return [];
  }
}

/**
 * Reads the `private_key_jwt` key now, so that a wrong key fails at startup rather than at the first login. Messages
 * describe the problem, never the key.
 */
function parsePrivateKey(value: unknown): ResolvedPrivateKey {
  const shape = '`privateKey` must be a private JWK with a `kid`, or { key: <PEM or private JWK>, kid, alg?, audience? }';
  if (!isRecord(value)) fail(`${shape}.`);
  const form: Record<string, unknown> = typeof value.kty === 'string' ? { key: value } : value;
  for (const key of Object.keys(form)) {
    if (!['key', 'kid', 'alg', 'audience'].includes(key)) fail(`unknown option \`privateKey.${key}\`; ${shape}.`);
  }
  const source = form.key;
  let keyObject: KeyObject;
  try {
    if (typeof source === 'string') keyObject = createPrivateKey(source);
    else if (isRecord(source)) keyObject = createPrivateKey({ key: source, format: 'jwk' });
    else throw new TypeError('no key');
  } catch {
    fail(`${shape}; the key given is not a readable unencrypted private key (PEM PKCS#8/PKCS#1/SEC1, or a JWK with "d").`);
  }
  const jwk = keyObject.export({ format: 'jwk' }) as JWK;
  const given = isRecord(source) ? (source as JWK) : undefined;
  const kid = form.kid ?? given?.kid;
  if (typeof kid !== 'string' || kid === '') {
    fail('`privateKey` needs a `kid`: the key id registered with the server (in the JWK, or as `privateKey.kid`).');
  }
  const algorithms = algorithmsFor(jwk);
  if (algorithms.length === 0) fail('`privateKey` must be an RSA, EC (P-256, P-384, P-521) or Ed25519 key.');
  const alg = form.alg ?? given?.alg ?? algorithms[0];
  if (typeof alg !== 'string' || !algorithms.includes(alg)) {
    fail(`\`privateKey.alg\` ${JSON.stringify(alg)} does not fit this ${jwk.kty} key; use one of ${algorithms.join(', ')}.`);
  }
  const audience = form.audience ?? 'issuer';
  if (audience !== 'issuer' && audience !== 'token_endpoint') fail("`privateKey.audience` must be 'issuer' or 'token_endpoint'.");
  return Object.freeze({ jwk: Object.freeze(jwk), kid, alg, audience });
}

import { randomUUID } from 'node:crypto';
import { SignJWT, importJWK, type JWTPayload } from 'jose';
import type { Redis } from 'ioredis';
import type { Configuration } from 'oidc-provider';
import type { Browser, BrowserResponse } from '../helpers/browser.js';
import { CLIENT_ID, CLIENT_SECRET } from '../helpers/app.js';
import type { TestProvider } from '../helpers/provider.js';

/** The event member every logout token carries. */
export const BCL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/**
 * Provider features for logout tests. `fetch` drops oidc-provider's SSRF guard, which refuses loopback addresses:
 * the apps under test listen on 127.0.0.1. The back-channel request itself is still the provider's own.
 */
export const logoutProviderConfiguration: Partial<Configuration> = {
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  fetch: (url, options) => {
    const { dispatcher: _ssrfGuard, ...rest } = options as RequestInit & { dispatcher?: unknown };
    return globalThis.fetch(url, rest);
  },
};

/** The express-session id inside a signed `connect.sid` cookie value (`s:<id>.<signature>`). */
export function sessionIdOf(cookieValue: string): string {
  const raw = decodeURIComponent(cookieValue);
  return raw.slice(2, raw.lastIndexOf('.'));
}

/** The session as connect-redis stored it, or null when it is gone. */
export async function storedSession(redis: Redis, sessionPrefix: string, cookieValue: string): Promise<Record<string, unknown> | null> {
  const json = await redis.get(`${sessionPrefix}${sessionIdOf(cookieValue)}`);
  return json === null ? null : (JSON.parse(json) as Record<string, unknown>);
}

/** `GET /me` as an API client: 200 with the claims while logged in, 401 otherwise. */
export async function me(browser: Browser, appUrl: string, cookie?: string): Promise<BrowserResponse> {
  return browser.request(`${appUrl}/me`, { headers: { accept: 'application/json', ...(cookie === undefined ? {} : { cookie }) } });
}

/** A same-origin logout form submission. */
export async function postLogout(browser: Browser, appUrl: string, headers: Record<string, string> = {}): Promise<BrowserResponse> {
  return browser.request(`${appUrl}/logout`, {
    method: 'POST',
    headers: { origin: appUrl, 'sec-fetch-site': 'same-origin', 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: '',
  });
}

/** Ends the browser's session at the provider through its own end-session page (confirming "Yes, sign me out"). */
export async function endSessionAtProvider(browser: Browser, issuer: string, query = ''): Promise<BrowserResponse> {
  const page = await browser.request(`${issuer}/session/end${query}`);
  if (page.status !== 200) throw new Error(`end-session page answered ${page.status}`);
  const action = /<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"/.exec(page.body)?.[1];
  const xsrf = /name="xsrf" value="([^"]+)"/.exec(page.body)?.[1];
  if (!action || !xsrf) throw new Error('no logout form on the end-session page');
  return browser.request(new URL(action, issuer), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ xsrf, logout: 'yes' }).toString(),
  });
}

/** Claims of a logout token as the provider would issue it for `sub`/`sid`; override or delete members per test. */
export function logoutClaims(issuer: string, subject: { sub?: string; sid?: string }): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: issuer,
    aud: CLIENT_ID,
    iat: now,
    exp: now + 120,
    jti: randomUUID(),
    events: { [BCL_EVENT]: {} },
    ...subject,
  };
}

/** Signs `claims` with the provider's own key (or `key`), as a logout token. */
export async function signLogoutToken(
  provider: TestProvider,
  claims: JWTPayload,
  options: { key?: Parameters<typeof importJWK>[0] | Uint8Array; kid?: string; alg?: string; typ?: string | null } = {},
): Promise<string> {
  const alg = options.alg ?? 'RS256';
  const key = options.key instanceof Uint8Array ? options.key : await importJWK(options.key ?? provider.signingKey, alg);
  const typ = options.typ === undefined ? 'logout+jwt' : options.typ;
  return new SignJWT(claims).setProtectedHeader({ alg, kid: options.kid ?? 'test-key-1', ...(typ === null ? {} : { typ }) }).sign(key);
}

/** An unsigned (`alg: none`) JWT, which must never be accepted. */
export function unsignedToken(claims: JWTPayload): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none', typ: 'logout+jwt' })}.${part(claims)}.`;
}

/** POSTs a logout token to an app's back-channel route, as the provider does. */
export async function sendLogoutToken(appUrl: string, token: string, path = '/backchannel-logout'): Promise<Response> {
  return fetch(`${appUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ logout_token: token }).toString(),
  });
}

/**
 * Runs `during` once, while the callback of the login that `login` makes writes that login's tokens: after the code
 * exchange, before the back-channel index holds the login (so a logout sent then cannot find it). `during` gets the
 * claims being stored; the login goes on when it is done. Resolves with what `login` resolved to and whether `during` ran.
 */
export async function duringTokenWrite<T>(
  redis: Redis,
  keyPrefix: string,
  login: () => Promise<T>,
  during: (claims: { sub: string; sid?: string }) => Promise<void>,
): Promise<{ result: T; ran: boolean }> {
  const patched = redis as unknown as { set: (...args: unknown[]) => Promise<unknown> };
  const set = redis.set.bind(redis) as (...args: unknown[]) => Promise<unknown>;
  let ran = false;
  patched.set = async (...args: unknown[]) => {
    if (!ran && String(args[0]).startsWith(`${keyPrefix}tokens:`)) {
      ran = true;
      await during((JSON.parse(String(args[1])) as { claims: { sub: string; sid?: string } }).claims);
    }
    return set(...args);
  };
  try {
    return { result: await login(), ran };
  } finally {
    delete (redis as { set?: unknown }).set;
  }
}

/**
 * Asks the provider's token endpoint to refresh: 200 while the refresh token lives, 400 `invalid_grant` once revoked.
 * As the test stacks' client unless `client` is given.
 */
export async function tryRefresh(
  issuer: string,
  refreshToken: string,
  client: { id: string; secret: string } = { id: CLIENT_ID, secret: CLIENT_SECRET },
): Promise<{ status: number; error?: string }> {
  const response = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }).toString(),
  });
  const body = (await response.json()) as { error?: string };
  return { status: response.status, ...(body.error === undefined ? {} : { error: body.error }) };
}

/** The provider's userinfo answer to an access token: 200 while valid, 401 once revoked. */
export async function userinfoStatus(issuer: string, accessToken: string): Promise<number> {
  const response = await fetch(`${issuer}/me`, { headers: { authorization: `Bearer ${accessToken}` } });
  await response.arrayBuffer();
  return response.status;
}

/**
 * Runs `use` while one command of `redis` fails as on a dropped connection, for the calls `applies` picks (all of them
 * unless told); gives back what `use` returned and how many calls failed. The command is restored whatever happens.
 */
export async function withFailingCommand<T>(
  redis: Redis,
  command: 'eval' | 'srem' | 'smembers' | 'set' | 'del' | 'exists',
  use: () => Promise<T>,
  applies: (args: unknown[]) => boolean = () => true,
): Promise<{ result: T; failures: number }> {
  const client = redis as unknown as Record<typeof command, (...args: unknown[]) => Promise<unknown>>;
  const original = client[command];
  let failures = 0;
  client[command] = async (...args: unknown[]) => {
    if (!applies(args)) return original.apply(redis, args);
    failures++;
    throw new Error('Connection is closed.');
  };
  try {
    return { result: await use(), failures };
  } finally {
    client[command] = original;
  }
}

/** For {@link withFailingCommand}: picks the first call that `applies` picks, and no other. */
export function firstOnly(applies: (args: unknown[]) => boolean = () => true): (args: unknown[]) => boolean {
  let picked = false;
  return (args) => {
    if (picked || !applies(args)) return false;
    picked = true;
    return true;
  };
}

/** Holds a request at a point of the test's choosing (`enter()` from the app's route) until the test calls `open()`. */
export class Gate {
  #entered!: () => void;
  #open!: () => void;
  /** Resolves once the request has reached the gate. */
  readonly entered = new Promise<void>((resolve) => (this.#entered = resolve));
  readonly opened = new Promise<void>((resolve) => (this.#open = resolve));
  /** For the route: says it is there, and waits until the test opens the gate. */
  enter(): Promise<void> {
    this.#entered();
    return this.opened;
  }
  open(): void {
    this.#open();
  }
}

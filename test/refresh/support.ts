import { spawn, type ChildProcess } from 'node:child_process';
import { expect } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { decodeJwt, generateKeyPair, importJWK, SignJWT } from 'jose';
import type { ClientMetadata, Configuration } from 'oidc-provider';
import type { Redis } from 'ioredis';
import type { AuthOptions } from '../../lib/index.js';
import { unpackTokens, type StoredTokens } from '../../lib/tokens.js';
import type { Browser } from '../helpers/browser.js';
import { startStack, type Stack, type StackRedis } from '../helpers/app.js';
import { refreshRoutes, type RouteHooks } from './fixtures/routes.js';
import { TEST_TTLS, tokenResponses, type TestProvider } from '../helpers/provider.js';
import { tryRefresh } from '../logout/support.js';

/** Access tokens live 4 s; expired tokens are refused at once (oidc-provider tolerates 15 s by default). */
export const ACCESS_TOKEN_TTL = 4;

/**
 * The lifetime (seconds) of access tokens a refresh grant issues; {@link ACCESS_TOKEN_TTL} unless a test that counts
 * refreshes in a burst lengthens it, so that a burst slowed down by a loaded machine cannot outlast the fresh token and
 * rightly refresh a second time.
 */
export const refreshedTokens = { ttl: ACCESS_TOKEN_TTL };

/** A provider that rotates refresh tokens; presenting a consumed one revokes the whole grant (reuse detection). */
export const refreshingProvider: Partial<Configuration> = {
  rotateRefreshToken: true,
  clockTolerance: 0,
  ttl: { ...TEST_TTLS, AccessToken: (ctx) => (grantType([ctx]) === 'refresh_token' ? refreshedTokens.ttl : ACCESS_TOKEN_TTL) },
};

/** Refreshes 1 s before expiry: with 4 s tokens, a fresh token stays usable for 2–3 s, plenty for a burst of calls. */
export const REFRESH_SKEW = 1;

/** The refresh tests' stack: the rotating provider, `refreshSkew` of {@link REFRESH_SKEW}, and the routes of fixtures/routes.ts. */
export function startRefreshStack(
  auth: Partial<AuthOptions> = {},
  hooks: RouteHooks = {},
  client: Partial<ClientMetadata> = {},
  redis?: StackRedis,
): Promise<Stack> {
  return startStack({
    client,
    ...(redis === undefined ? {} : { redis }),
    provider: { configuration: refreshingProvider },
    auth: { refreshSkew: REFRESH_SKEW, ...auth },
    routes: (app) => refreshRoutes(app, hooks),
  });
}

function grantType(args: unknown[]): unknown {
  return (args[0] as { oidc?: { params?: { grant_type?: unknown } } } | undefined)?.oidc?.params?.grant_type;
}

/** Successful refresh-token grants the provider has answered so far. */
export function refreshGrants(provider: TestProvider): number {
  return provider.events.filter((e) => e.name === 'grant.success' && grantType(e.args) === 'refresh_token').length;
}

/** Refused refresh-token grants (invalid_grant, …). */
export function refreshErrors(provider: TestProvider): number {
  return provider.events.filter((e) => e.name === 'grant.error' && grantType(e.args) === 'refresh_token').length;
}

export type StubMode = 'pass' | 'fail500' | 'hang' | 'hold' | 'swapSub' | 'reclaim' | 'foreignKey' | 'clientRefused' | 'dropAccessToken';

/**
 * A provider misbehaving on purpose, in front of its token endpoint: answering 500, hanging until the client goes
 * away (the request never reaches the grant handler), holding a granted answer until released (the refresh token is
 * rotated at the provider, the client has not heard yet), swapping the refreshed ID token's `sub` (re-signed with the
 * provider's own key, so that only the §12.2 check can catch it), or re-signing the refreshed ID token unchanged with
 * a key of its own under the provider's `kid` (only a signature check can catch it), or leaving the access token out of
 * a granted answer (`dropAccessToken`: the refresh token it keeps is live at the provider). Counts every POST to the token
 * endpoint. With `keysDown`, the provider's key set (`/jwks`) answers 503. Its revocation endpoint can fail (503) or
 * hold each request until released (`revocation`).
 */
export interface TokenStub {
  mode: StubMode;
  /** POSTs to /token seen so far, whatever the mode. */
  posts: number;
  /** `Date.now()` when the last POST to /token arrived (0 before any). */
  lastPostAt: number;
  /** Resolves when the next request is held in `hang` mode, or granted and held in `hold` mode. */
  nextHang(): Promise<void>;
  /** Sends the answers held in `hold` mode. */
  release(): void;
  /** While true, `GET /jwks` answers 503. */
  keysDown: boolean;
  /** In `reclaim` mode: the refreshed ID token's claims, re-signed with the provider's own key. */
  reclaim: (claims: Record<string, unknown>) => Record<string, unknown>;
  /** `fail`: the revocation endpoint answers 503; `hold`: it keeps each request until `releaseRevocations()`. */
  revocation: 'pass' | 'fail' | 'hold';
  /** Revocation requests held in `hold` mode right now. */
  heldRevocations: number;
  /** Lets the held revocation requests through to the provider. */
  releaseRevocations(): void;
}

export function installTokenStub(tp: TestProvider): TokenStub {
  let hangWaiters: Array<() => void> = [];
  let held: Array<() => void> = [];
  const notifyHang = () => {
    const waiters = hangWaiters;
    hangWaiters = [];
    for (const resolve of waiters) resolve();
  };
  const stub: TokenStub = {
    mode: 'pass',
    posts: 0,
    lastPostAt: 0,
    nextHang: () => new Promise<void>((resolve) => hangWaiters.push(resolve)),
    release: () => {
      const answers = held;
      held = [];
      for (const send of answers) send();
    },
    keysDown: false,
    reclaim: (claims) => claims,
    revocation: 'pass',
    heldRevocations: 0,
    releaseRevocations: () => {
      const waiting = heldRevocations;
      heldRevocations = [];
      for (const release of waiting) release();
    },
  };
  let heldRevocations: Array<() => void> = [];
  const foreignKey = generateKeyPair('RS256');
  tp.provider.use(async (ctx, next) => {
    if (stub.keysDown && ctx.path === '/jwks') {
      ctx.status = 503;
      ctx.body = { error: 'temporarily_unavailable' };
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/token/revocation' && stub.revocation !== 'pass') {
      if (stub.revocation === 'fail') {
        ctx.status = 503;
        ctx.body = { error: 'temporarily_unavailable' };
        return;
      }
      stub.heldRevocations++;
      await new Promise<void>((resolve) => heldRevocations.push(resolve));
      stub.heldRevocations--;
      return next();
    }
    if (ctx.method !== 'POST' || ctx.path !== '/token') return next();
    stub.posts++;
    stub.lastPostAt = Date.now();
    switch (stub.mode) {
      case 'fail500':
        ctx.status = 500;
        ctx.body = { error: 'server_error', error_description: 'stubbed failure' };
        return;
      case 'clientRefused':
        // What the server answers once the client's secret changed at the server (a Basic challenge, RFC 6749 §5.2).
        ctx.status = 401;
        ctx.set('WWW-Authenticate', `Basic realm="${tp.issuer}", error="invalid_client"`);
        ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
        return;
      case 'hang': {
        const closed = new Promise<void>((resolve) => ctx.res.once('close', () => resolve()));
        notifyHang();
        await closed;
        ctx.respond = false;
        return;
      }
      case 'hold': {
        await next();
        const released = new Promise<void>((resolve) => held.push(resolve));
        notifyHang();
        await released;
        return;
      }
      case 'dropAccessToken': {
        await next();
        const { access_token: _dropped, ...rest } = ctx.body as Record<string, unknown>;
        ctx.body = rest;
        return;
      }
      case 'swapSub':
      case 'reclaim':
      case 'foreignKey': {
        await next();
        const body = ctx.body as { id_token?: string } | undefined;
        if (ctx.status === 200 && typeof body?.id_token === 'string') {
          const key = stub.mode === 'foreignKey' ? (await foreignKey).privateKey : await importJWK(tp.signingKey, 'RS256');
          const claims = decodeJwt(body.id_token);
          const changed = stub.mode === 'swapSub' ? { ...claims, sub: 'mallory' } : stub.mode === 'reclaim' ? stub.reclaim(claims) : claims;
          const forged = await new SignJWT(changed)
            .setProtectedHeader({ alg: 'RS256', kid: String(tp.signingKey.kid) })
            .sign(key);
          ctx.body = { ...body, id_token: forged };
        }
        return;
      }
      default:
        return next();
    }
  });
  // Koa composes its middleware when callback() is called: rebind the server to a freshly composed handler.
  const handler = tp.provider.callback();
  tp.server.removeAllListeners('request');
  tp.server.on('request', handler);
  return stub;
}

/** Runs `call` with the stub in `mode`, then puts it back to `pass`, whatever happened. */
export async function inMode<T>(stub: TokenStub, mode: StubMode, call: () => Promise<T>): Promise<T> {
  stub.mode = mode;
  try {
    return await call();
  } finally {
    stub.mode = 'pass';
  }
}

/** A refresh that ended the login: 401 `login_required` for `reason`, no login left in the session, a tombstone in the store. */
export async function expectLoginEnded(
  stack: Stack,
  browser: Browser,
  loginId: string,
  answer: { status: number; body: Record<string, unknown> },
  reason: RegExp,
): Promise<void> {
  expect(answer.status).toBe(401);
  expect(answer.body).toMatchObject({ error: 'login_required' });
  expect(String(answer.body.error_description)).toMatch(reason);
  expect((await readSession(stack, browser)).oauth?.login).toBeUndefined();
  expect(await readRecord(stack.redis, tokenKey(stack, loginId))).toMatchObject({ ended: true });
}

/** The session id behind the browser's signed `connect.sid` cookie. */
export function sessionId(browser: Browser, appUrl: string): string {
  const raw = browser.cookie(new URL(appUrl).hostname, 'connect.sid')?.value;
  if (raw === undefined) throw new Error('no session cookie');
  const signed = decodeURIComponent(raw);
  return signed.slice(2, signed.lastIndexOf('.'));
}

export interface StoredLogin {
  id: string;
  version?: number;
  claims?: Record<string, unknown>;
  tokens: StoredTokens;
}

/** The session document as connect-redis stored it, with the login's token copy unpacked. */
export async function readSession(stack: Stack, browser: Browser): Promise<{ oauth?: { login?: StoredLogin } } & Record<string, unknown>> {
  const raw = await stack.redis.get(`${stack.sessionPrefix}${sessionId(browser, stack.appUrl)}`);
  if (raw === null) throw new Error('no session in Redis');
  const session = JSON.parse(raw) as { oauth?: { login?: Omit<StoredLogin, 'tokens'> & { tokens: unknown } } } & Record<string, unknown>;
  const login = session.oauth?.login;
  if (login === undefined) return session as { oauth?: { login?: StoredLogin } };
  const tokens = unpackTokens(login.tokens);
  if (typeof login.tokens !== 'string' || tokens === undefined) throw new Error('the session holds a login whose token copy is not packed');
  return { ...session, oauth: { ...session.oauth, login: { ...login, tokens } } };
}

export async function readLogin(stack: Stack, browser: Browser): Promise<StoredLogin> {
  const login = (await readSession(stack, browser)).oauth?.login;
  if (login === undefined) throw new Error('no login in the session');
  return login;
}

export function tokenKey(stack: Stack, loginId: string): string {
  return `${stack.authOptions.keyPrefix ?? ''}tokens:${loginId}`;
}

export function lockKey(stack: Stack, loginId: string): string {
  return `${stack.authOptions.keyPrefix ?? ''}lock:${loginId}`;
}

/** The token-store entry of a login, as the library wrote it to Redis. */
export async function readRecord(
  redis: Redis,
  key: string,
): Promise<{ v: number; ended?: true; tokens?: StoredLogin['tokens']; claims?: Record<string, unknown> } | null> {
  const raw = await redis.get(key);
  return raw === null ? null : (JSON.parse(raw) as { v: number });
}

/** Sleeps until the library considers these tokens due for refresh (expiry minus the effective skew), plus a margin. */
export async function waitUntilDue(tokens: StoredLogin['tokens']): Promise<void> {
  if (tokens.expiresAt === undefined || tokens.lifetime === undefined) throw new Error('tokens without expiry');
  const skew = Math.min(REFRESH_SKEW, tokens.lifetime / 2);
  const dueMs = (tokens.expiresAt - skew) * 1000 + 100;
  const wait = dueMs - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}

/** GETs an app route with the browser's cookies, as an API client (JSON). */
export async function getJson(browser: Browser, url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const target = new URL(url);
  const cookie = browser.cookieHeader(target);
  const response = await fetch(target, { headers: { accept: 'application/json', ...(cookie ? { cookie } : {}) } });
  const text = await response.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { raw: text };
  }
  return { status: response.status, body };
}

/** Calls the provider's userinfo endpoint with an access token: 200 only while the token and its grant are alive. */
export async function userinfoStatus(provider: TestProvider, accessToken: string): Promise<number> {
  const response = await fetch(`${provider.issuer}/me`, { headers: { authorization: `Bearer ${accessToken}` } });
  await response.arrayBuffer();
  return response.status;
}

/**
 * The provider's last refresh answer was refused by the app and its tokens revoked: the refresh token it issued is
 * refused at the provider, and so is its access token.
 */
export async function expectLastRefreshRevoked(provider: TestProvider): Promise<void> {
  const [refreshed] = tokenResponses(provider, 'refresh_token').slice(-1);
  expect(refreshed?.refresh_token).toEqual(expect.any(String));
  expect(await tryRefresh(provider.issuer, refreshed!.refresh_token!)).toEqual({ status: 400, error: 'invalid_grant' });
  expect(await userinfoStatus(provider, refreshed!.access_token)).toBe(401);
}

/** An app process of its own (see fixtures/app-process.ts). */
export interface AppProcess {
  readonly url: string;
  readonly child: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const APP_PROCESS = fileURLToPath(new URL('./fixtures/app-process.ts', import.meta.url));

/** An app process on the stack's Redis and provider; `overrides` change its auth() options (e.g. `httpTimeout`). */
export async function spawnAppProcess(stack: Stack, overrides: Omit<Partial<AuthOptions>, 'redis'> = {}): Promise<AppProcess> {
  const { redis: _redis, ...stackAuth } = stack.authOptions;
  const auth = { ...stackAuth, ...overrides };
  const config: { redisUrl: string; sessionPrefix: string; auth: Omit<AuthOptions, 'redis'> } = {
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    sessionPrefix: stack.sessionPrefix,
    auth,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', APP_PROCESS], {
    env: { ...process.env, APP_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`app process did not start: ${stderr}`)), 25_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /READY (\S+)/.exec(stdout);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`app process exited (${String(code)}): ${stderr}`));
    });
  });
  // Discovery is lazy and each process does its own: run it now, so that the first timed request of a test does not
  // also carry discovery (with a short httpTimeout on a loaded machine that can time out, and is retried).
  for (let attempt = 0; ; attempt++) {
    const warm = await fetch(`${url}/login`, { redirect: 'manual' });
    await warm.arrayBuffer();
    if (warm.status === 302) break;
    if (attempt === 10) throw new Error(`app process could not discover the issuer (HTTP ${warm.status})`);
  }
  return {
    url,
    child,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

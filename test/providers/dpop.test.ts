import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import type { Express } from 'express';
import type { Redis } from 'ioredis';
import { calculateJwkThumbprint, type JWK } from 'jose';
import * as oidc from 'openid-client';
import { checkDPoPSupport, createDPoPKey, dpopDowngrade, dpopOptionsFor } from '../../lib/dpop.js';
import type { AuthOptions } from '../../lib/index.js';
import { resolveOptions } from '../../lib/options.js';
import { connectRedis } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { logRevocations, startProvider, tokenResponses, type RevocationLog, type TestProvider } from '../helpers/provider.js';
import { tryRefresh, userinfoStatus } from '../logout/support.js';
import { installTokenStub, inMode, type TokenStub } from '../refresh/support.js';
import { appSlot, recordRequests, storedSessions, type AppSlot } from './support.js';

const SECRET = 'dpop-secret-not-for-production';

let redis: Redis;
beforeAll(() => {
  redis = connectRedis();
});
afterAll(() => redis.disconnect());

function client(clientId: string, redirectUris: string[], extra: Record<string, unknown> = {}) {
  return {
    client_id: clientId,
    client_secret: SECRET,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code' as const],
    ...extra,
  };
}

function options(slot: AppSlot, issuer: string, extra: Partial<AuthOptions> = {}): AuthOptions {
  return {
    issuer,
    clientId: 'dpop-app',
    clientSecret: SECRET,
    redirectUri: slot.redirectUri,
    scope: 'openid',
    allowInsecureRequests: true,
    redis,
    keyPrefix: `test:${randomUUID()}:`,
    dpop: true,
    ...extra,
  };
}

/** The app's routes: what req.auth says, and the provider's userinfo called through req.auth.fetch. */
function routes(issuer: string) {
  return (app: Express): void => {
    app.get('/whoami', (req, res) => res.json({ isAuthenticated: req.auth.isAuthenticated, tokenType: req.auth.tokens?.tokenType ?? null }));
    app.get('/refresh', async (req, res, next) => {
      try {
        const before = req.auth.tokens?.accessToken;
        const after = await req.auth.refresh();
        res.json({ changed: after.accessToken !== before, tokenType: after.tokenType });
      } catch (err) {
        next(err);
      }
    });
    app.get('/userinfo', async (req, res, next) => {
      try {
        const response = await req.auth.fetch(`${issuer}/me`);
        res.status(response.status).json(response.status === 200 ? await response.json() : { status: response.status });
      } catch (err) {
        next(err);
      }
    });
  };
}

function loginsOf(sessions: Array<Record<string, unknown>>): Array<{ dpopKey?: JWK; tokens: unknown }> {
  return sessions.flatMap((s) => {
    const login = (s.oauth as { login?: { dpopKey?: JWK; tokens: unknown } } | undefined)?.login;
    return login === undefined ? [] : [login];
  });
}

describe('DPoP at a provider that requires nonces and DPoP-bound tokens', () => {
  let provider: TestProvider;
  let requests: string[];
  let app: AppSlot;
  let withPar: AppSlot;
  let withUser: AppSlot;
  /** Whether each pushed authorization request carried a DPoP proof. */
  const pushedProofs: boolean[] = [];

  beforeAll(async () => {
    [app, withPar, withUser] = await Promise.all([appSlot(), appSlot(), appSlot()]);
    provider = await startProvider({
      clients: [client('dpop-app', [app.redirectUri, withPar.redirectUri, withUser.redirectUri], { dpop_bound_access_tokens: true })],
      configuration: {
        features: {
          devInteractions: { enabled: true },
          // Every DPoP proof must carry a server nonce (RFC 9449 §8): the first request of each kind is answered
          // with use_dpop_nonce.
          dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true },
        },
      },
    });
    requests = recordRequests(provider.server);
    provider.server.prependListener('request', (req) => {
      if (req.method === 'POST' && req.url === '/request') pushedProofs.push(typeof req.headers.dpop === 'string');
    });
    app.mount(redis, options(app, provider.issuer), routes(provider.issuer));
    withPar.mount(redis, options(withPar, provider.issuer, { pushedAuthorizationRequests: true }), routes(provider.issuer));
    const fetchUser: AuthOptions['fetchUser'] = async (_tokens, { fetch }) => (await fetch(`${provider.issuer}/me`)).json();
    withUser.mount(redis, options(withUser, provider.issuer, { fetchUser }), (express) => {
      routes(provider.issuer)(express);
      express.get('/user', (req, res) => res.json(req.auth.user ?? null));
    });
  });

  afterAll(async () => {
    await Promise.all([app.listener.close(), withPar.listener.close(), withUser.listener.close()]);
    await provider.close();
  });

  test('logs in with a DPoP-bound token; the use_dpop_nonce answer is retried once', async () => {
    const tokenCalls = requests.filter((r) => r === 'POST /token').length;
    const result = await app.browser.login(`${app.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ isAuthenticated: true, tokenType: 'DPoP' });
    // One refusal asking for a nonce, then the exchange with it.
    expect(requests.filter((r) => r === 'POST /token').length).toBe(tokenCalls + 2);
  });

  test('the key pair is per login, kept server-side, and the authorization code was bound to it (dpop_jkt)', async () => {
    const logins = loginsOf(await storedSessions(redis, app.sessionPrefix));
    expect(logins).toHaveLength(1);
    const key = logins[0]!.dpopKey!;
    expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', d: expect.any(String) });

    // A second login (another browser) gets another key, and its code is bound to that key's thumbprint.
    const browser = new Browser();
    const second = await browser.login(`${app.url}/login?returnTo=/whoami`);
    expect(second.status).toBe(200);
    const keys = loginsOf(await storedSessions(redis, app.sessionPrefix)).map((l) => l.dpopKey!);
    expect(keys).toHaveLength(2);
    expect(keys[0]!.x).not.toBe(keys[1]!.x);
    const secondKey = keys.find((k) => k.x !== key.x)!;
    const jkt = await calculateJwkThumbprint({ kty: secondKey.kty!, crv: secondKey.crv!, x: secondKey.x!, y: secondKey.y! });
    expect(new URL(second.steps[0]!.location!).searchParams.get('dpop_jkt')).toBe(jkt);
    // Nothing the browser holds names the key: one opaque session cookie.
    expect([...(browser.jar.get('127.0.0.1')?.keys() ?? [])]).toEqual(['connect.sid']);
    expect(second.body).not.toContain(secondKey.d!);
  });

  test('req.auth.fetch calls the provider userinfo with a fresh proof each time; the nonce is remembered', async () => {
    const first = await app.browser.request(`${app.url}/userinfo`, { headers: { accept: 'application/json' } });
    const calls = requests.filter((r) => r === 'GET /me').length;
    const second = await app.browser.request(`${app.url}/userinfo`, { headers: { accept: 'application/json' } });

    expect(first.status).toBe(200);
    expect(JSON.parse(first.body)).toMatchObject({ sub: 'alice' });
    // A replayed proof (same jti) would be refused; a second call works with a new one, without a nonce retry.
    expect(second.status).toBe(200);
    expect(requests.filter((r) => r === 'GET /me').length).toBe(calls + 1);
  });

  test('the same access token is refused at userinfo as a plain Bearer token, and as DPoP without a proof', async () => {
    const token = JSON.parse((await app.browser.request(`${app.url}/token`, { headers: { accept: 'application/json' } })).body) as { accessToken: string };

    const bearer = await fetch(`${provider.issuer}/me`, { headers: { authorization: `Bearer ${token.accessToken}` } });
    const unproven = await fetch(`${provider.issuer}/me`, { headers: { authorization: `DPoP ${token.accessToken}` } });

    expect(bearer.status).toBe(401);
    expect(await bearer.json()).toMatchObject({ error: 'invalid_token' });
    expect(unproven.status).toBe(400);
    expect(await unproven.json()).toMatchObject({ error: 'invalid_request', error_description: '`DPoP` header not provided' });
  });

  test('a refresh carries a proof of the same key: the new token is DPoP-bound and works at userinfo', async () => {
    const tokenCalls = requests.filter((r) => r === 'POST /token').length;
    const refreshed = await app.browser.request(`${app.url}/refresh`, { headers: { accept: 'application/json' } });

    expect(refreshed.status).toBe(200);
    expect(JSON.parse(refreshed.body)).toEqual({ changed: true, tokenType: 'DPoP' });
    // The nonce of the earlier requests is remembered: one refresh request, no retry.
    expect(requests.filter((r) => r === 'POST /token').length).toBe(tokenCalls + 1);
    const userinfo = await app.browser.request(`${app.url}/userinfo`, { headers: { accept: 'application/json' } });
    expect(userinfo.status).toBe(200);
    expect(JSON.parse(userinfo.body)).toMatchObject({ sub: 'alice' });
  });

  test("fetchUser's fetch sends the new DPoP-bound token with a proof of the login's key", async () => {
    const result = await withUser.browser.login(`${withUser.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ isAuthenticated: true, tokenType: 'DPoP' });
    expect(JSON.parse((await withUser.browser.request(`${withUser.url}/user`)).body)).toMatchObject({ sub: 'alice' });
  });

  test('with PAR the pushed request carries the proof, and the login is DPoP-bound', async () => {
    const result = await withPar.browser.login(`${withPar.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ isAuthenticated: true, tokenType: 'DPoP' });
    expect([...new URL(result.steps[0]!.location!).searchParams.keys()].sort()).toEqual(['client_id', 'request_uri']);
    // The proof on the pushed request binds the code to the key (RFC 9449 §10.1); the URL carries no dpop_jkt.
    expect(pushedProofs.length).toBeGreaterThan(0);
    expect(pushedProofs.every(Boolean)).toBe(true);
    const userinfo = await withPar.browser.request(`${withPar.url}/userinfo`, { headers: { accept: 'application/json' } });
    expect(JSON.parse(userinfo.body)).toMatchObject({ sub: 'alice' });
  });
});

describe('an ID token refused inside the exchange at a provider that requires DPoP nonces', () => {
  let provider: TestProvider;
  let app: AppSlot;
  let revocations: RevocationLog;
  let stub: TokenStub;

  beforeAll(async () => {
    app = await appSlot();
    provider = await startProvider({
      clients: [client('dpop-app', [app.redirectUri], { dpop_bound_access_tokens: true })],
      configuration: {
        features: { devInteractions: { enabled: true }, revocation: { enabled: true }, dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true } },
      },
    });
    stub = installTokenStub(provider);
    revocations = logRevocations(provider);
    app.mount(redis, options(app, provider.issuer), routes(provider.issuer));
  });

  afterAll(async () => {
    await app.listener.close();
    await provider.close();
  });

  test('the tokens of the answer that follows the use_dpop_nonce refusal are the ones revoked', async () => {
    // The first token request is refused for its missing nonce; what the second one got is what nobody holds.
    stub.reclaim = (claims) => ({ ...claims, nonce: 'not-the-nonce' });
    const before = revocations.answered;
    const result = await inMode(stub, 'reclaim', () => app.browser.login(`${app.url}/login?returnTo=/whoami`));
    expect(result.status).toBe(400);
    expect(result.body).toContain('invalid_id_token');
    const [issued] = tokenResponses(provider).slice(-1);
    expect(issued!.refresh_token).toEqual(expect.any(String));

    await revocations.answeredAtLeast(before + 2);
    expect(await tryRefresh(provider.issuer, issued!.refresh_token!, { id: 'dpop-app', secret: SECRET })).toEqual({ status: 400, error: 'invalid_grant' });
  });
});

describe('dpop: true at a provider that does not bind tokens', () => {
  let provider: TestProvider;
  let app: AppSlot;
  let revocations: RevocationLog;

  beforeAll(async () => {
    app = await appSlot();
    provider = await startProvider({
      clients: [client('dpop-app', [app.redirectUri])],
      configuration: { features: { devInteractions: { enabled: true }, revocation: { enabled: true }, dPoP: { enabled: false } } },
    });
    revocations = logRevocations(provider);
    app.mount(redis, options(app, provider.issuer), routes(provider.issuer));
  });

  afterAll(async () => {
    await app.listener.close();
    await provider.close();
  });

  test('refuses the Bearer token it gets instead (no silent downgrade) and stores no login', async () => {
    const result = await app.browser.login(`${app.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(400);
    expect(result.body).toContain('token_exchange_failed');
    expect(result.body).toContain('issued a Bearer token instead of a DPoP-bound one');
    expect(loginsOf(await storedSessions(redis, app.sessionPrefix))).toEqual([]);
  });

  test('the tokens of the refused answer are revoked: nobody holds them, and the grant is not left alive', async () => {
    const before = revocations.answered;
    app.browser.jar.clear();
    const result = await app.browser.login(`${app.url}/login?returnTo=/whoami`);
    expect(result.status).toBe(400);
    const [issued] = tokenResponses(provider).slice(-1);
    expect(issued!.refresh_token).toEqual(expect.any(String));

    await revocations.answeredAtLeast(before + 2);
    expect(await tryRefresh(provider.issuer, issued!.refresh_token!, { id: 'dpop-app', secret: SECRET })).toEqual({ status: 400, error: 'invalid_grant' });
    expect(await userinfoStatus(provider.issuer, issued!.access_token)).toBe(401);
  });
});

/**
 * The day an app with logged-in users sets `dpop: true` (or back to false): a new release mounted on the same Redis
 * sessions and token store, at a provider that accepts both Bearer and DPoP-bound tokens from this client.
 */
describe('turning dpop on or off for an app with logged-in users', () => {
  let provider: TestProvider;
  let requests: string[];
  let slot: AppSlot;
  let keyPrefix: string;

  const revocations = () => requests.filter((r) => r === 'POST /token/revocation').length;
  const getJson = (path: string) => slot.browser.request(`${slot.url}${path}`, { headers: { accept: 'application/json' } });
  /** Mounts the app (the same sessions and token store each time) with `dpop` on or off. */
  const release = (dpop: boolean) => slot.mount(redis, options(slot, provider.issuer, { dpop, keyPrefix }), routes(provider.issuer));

  beforeAll(async () => {
    slot = await appSlot();
    provider = await startProvider({
      clients: [client('dpop-app', [slot.redirectUri])],
      configuration: {
        rotateRefreshToken: true,
        features: { devInteractions: { enabled: true }, revocation: { enabled: true }, dPoP: { enabled: true } },
      },
    });
    requests = recordRequests(provider.server);
  });

  afterAll(async () => {
    await slot.listener.close();
    await provider.close();
  });

  beforeEach(() => {
    keyPrefix = `test:${randomUUID()}:`;
    slot.browser.jar.clear();
  });

  test('a login made before dpop was turned on keeps refreshing as Bearer (no proof, nothing revoked); new logins get DPoP', async () => {
    release(false);
    const login = await slot.browser.login(`${slot.url}/login?returnTo=/whoami`);
    expect(JSON.parse(login.body)).toEqual({ isAuthenticated: true, tokenType: 'Bearer' });
    const [revoked, grantsRevoked] = [revocations(), provider.count('grant.revoked')];

    release(true);
    const refreshed = await getJson('/refresh');

    expect(refreshed.status).toBe(200);
    expect(JSON.parse(refreshed.body)).toEqual({ changed: true, tokenType: 'Bearer' });
    expect(JSON.parse((await getJson('/whoami')).body)).toEqual({ isAuthenticated: true, tokenType: 'Bearer' });
    // req.auth.fetch sends it as what it is, a Bearer token.
    const userinfo = await getJson('/userinfo');
    expect(userinfo.status).toBe(200);
    expect(JSON.parse(userinfo.body)).toMatchObject({ sub: 'alice' });
    // The rotated refresh token was kept: the login refreshes again.
    expect(JSON.parse((await getJson('/refresh')).body)).toEqual({ changed: true, tokenType: 'Bearer' });
    expect(revocations()).toBe(revoked);
    expect(provider.count('grant.revoked')).toBe(grantsRevoked);

    // Whoever logs in now gets a DPoP-bound login.
    const newcomer = new Browser();
    const fresh = await newcomer.login(`${slot.url}/login?returnTo=/whoami`);
    expect(JSON.parse(fresh.body)).toEqual({ isAuthenticated: true, tokenType: 'DPoP' });
  });

  test('a sign-in started before dpop was turned on completes as a Bearer login', async () => {
    release(false);
    const pending = await slot.browser.login(`${slot.url}/login?returnTo=/whoami`, { stopAtCallback: (u) => u.pathname === '/callback' });
    const callbackUrl = pending.steps.at(-1)!.location!;

    release(true);
    const landed = await slot.browser.request(callbackUrl);

    expect(landed.status).toBe(302);
    expect(JSON.parse((await getJson('/whoami')).body)).toEqual({ isAuthenticated: true, tokenType: 'Bearer' });
  });

  test('a login made while dpop was on keeps proving its key after dpop is turned off', async () => {
    release(true);
    const login = await slot.browser.login(`${slot.url}/login?returnTo=/whoami`);
    expect(JSON.parse(login.body)).toEqual({ isAuthenticated: true, tokenType: 'DPoP' });

    release(false);
    const refreshed = await getJson('/refresh');

    expect(refreshed.status).toBe(200);
    expect(JSON.parse(refreshed.body)).toEqual({ changed: true, tokenType: 'DPoP' });
    const userinfo = await getJson('/userinfo');
    expect(userinfo.status).toBe(200);
    expect(JSON.parse(userinfo.body)).toMatchObject({ sub: 'alice' });
  });
});

describe('DPoP handles, checks and downgrades, without a provider', () => {
  const metadata = { issuer: 'https://idp.example.com', token_endpoint: 'https://idp.example.com/token' };
  const configuration = new oidc.Configuration(metadata, 'dpop-app');
  /** A runtime of its own per test: the handle cache is per server resolver. */
  const services = (server: () => Promise<oidc.Configuration> = async () => configuration) => ({ server });
  const config = (dpop: boolean) => resolveOptions({ issuer: metadata.issuer, clientId: 'dpop-app', redirectUri: 'https://app.example.com/callback', dpop });

  test('the server must accept ES256 proofs when it lists what it accepts, and only when dpop is on', () => {
    const es256Refused = { ...metadata, dpop_signing_alg_values_supported: ['PS256', 'EdDSA'] };
    expect(() => checkDPoPSupport(config(true), es256Refused)).toThrow(expect.objectContaining({ code: 'discovery_failed', status: 502 }));
    expect(() => checkDPoPSupport(config(true), { ...metadata, dpop_signing_alg_values_supported: ['PS256', 'ES256'] })).not.toThrow();
    expect(() => checkDPoPSupport(config(true), metadata)).not.toThrow();
    expect(() => checkDPoPSupport(config(false), es256Refused)).not.toThrow();
  });

  test('a Bearer token is a downgrade only with dpop on, for a login that has a key', async () => {
    const { jwk } = await createDPoPKey(services());
    expect(dpopDowngrade(config(true), { dpopKey: jwk }, { token_type: 'bearer' })).toMatch(/issued a Bearer token instead of a DPoP-bound one/);
    expect(dpopDowngrade(config(true), { dpopKey: jwk }, { token_type: 'DPoP' })).toBeUndefined();
    expect(dpopDowngrade(config(true), {}, { token_type: 'bearer' })).toBeUndefined();
    // Turned off: the server may go back to Bearer for logins made while it was on, as the app now asks nothing else.
    expect(dpopDowngrade(config(false), { dpopKey: jwk }, { token_type: 'bearer' })).toBeUndefined();
  });

  test('handles are kept per key for the most recently used 1000 keys', async () => {
    const runtime = services();
    const handle = async (jwk: JWK) => (await dpopOptionsFor(runtime, { dpopKey: jwk }))!.DPoP;
    const first = await createDPoPKey(runtime);
    const second = await createDPoPKey(runtime);
    for (let i = 0; i < 998; i++) await createDPoPKey(runtime);
    // 1000 keys held. Using the first makes it the most recent, so the next key pushes out the second instead.
    expect(await handle(first.jwk)).toBe(first.handle);
    await createDPoPKey(runtime);

    expect(await handle(first.jwk)).toBe(first.handle);
    const again = await handle(second.jwk);
    expect(again).not.toBe(second.handle);
    expect(await handle(second.jwk)).toBe(again);
  });

  test("a stored key that cannot be read is the login's end (401 login_required), not a server error", async () => {
    const { jwk } = await createDPoPKey(services());
    const damaged = { ...jwk, d: 'not-the-key' };

    await expect(dpopOptionsFor(services(), { dpopKey: damaged })).rejects.toMatchObject({ code: 'login_required', status: 401 });
  });

  test('a handle that could not be made is not kept: the next request tries again', async () => {
    const { jwk } = await createDPoPKey(services());
    let calls = 0;
    const runtime = services(async () => {
      calls += 1;
      if (calls === 1) throw new Error('discovery failed this once');
      return configuration;
    });

    await expect(dpopOptionsFor(runtime, { dpopKey: jwk })).rejects.toThrow('discovery failed this once');
    await expect(dpopOptionsFor(runtime, { dpopKey: jwk })).resolves.toEqual({ DPoP: expect.anything() });
  });
});

import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { Express } from 'express';
import type { Redis } from 'ioredis';
import type { AuthError, AuthOptions } from '../../lib/index.js';
import { connectRedis } from '../helpers/app.js';
import { inspectDeep } from '../helpers/security.js';
import { startProvider, type TestProvider } from '../helpers/provider.js';
import { resourceRoutes } from './resource-server.js';
import { appSlot, recordRequests, storedSessions, type AppSlot } from './support.js';

const CLIENT = { id: 'plain-oauth-app', secret: 'plain-oauth-secret-not-for-production' };
const SCOPE = 'api:read';

let provider: TestProvider;
let redis: Redis;
let requests: string[];
let byHand: AppSlot;
let oauth2Discovery: AppSlot;
let failing: AppSlot;
let noIssuer: AppSlot;
let hook: NonNullable<AuthOptions['fetchUser']> = async () => ({});
const reported: AuthError[] = [];

/** Routes every app here gets: the resource server, plus what req.auth says and a call through req.auth.fetch. */
function routes(slot: AppSlot) {
  const resources = resourceRoutes(provider.issuer, CLIENT);
  return (app: Express): void => {
    resources(app);
    app.get('/whoami', async (req, res) => {
      res.json({
        isAuthenticated: req.auth.isAuthenticated,
        claims: req.auth.claims ?? null,
        user: req.auth.user ?? null,
        expiresAt: req.auth.tokens?.expiresAt ?? null,
        idToken: req.auth.isAuthenticated ? ((await req.auth.getIdToken()) ?? null) : null,
      });
    });
    app.get('/call', async (req, res, next) => {
      try {
        const response = await req.auth.fetch(`${slot.url}/api/echo`);
        res.json(await response.json());
      } catch (err) {
        next(err);
      }
    });
  };
}

function options(slot: AppSlot, extra: Partial<AuthOptions>): AuthOptions {
  return {
    clientId: CLIENT.id,
    clientSecret: CLIENT.secret,
    redirectUri: slot.redirectUri,
    scope: SCOPE,
    allowInsecureRequests: true,
    redis,
    keyPrefix: `test:${randomUUID()}:`,
    ...extra,
  } as AuthOptions;
}

beforeAll(async () => {
  [byHand, oauth2Discovery, failing, noIssuer] = await Promise.all([appSlot(), appSlot(), appSlot(), appSlot()]);
  provider = await startProvider({
    clients: [
      {
        client_id: CLIENT.id,
        client_secret: CLIENT.secret,
        redirect_uris: [byHand.redirectUri, oauth2Discovery.redirectUri, failing.redirectUri, noIssuer.redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    configuration: {
      scopes: ['openid', 'offline_access', SCOPE],
      features: { devInteractions: { enabled: true }, introspection: { enabled: true } },
    },
  });
  requests = recordRequests(provider.server);
  redis = connectRedis();
  // oidc-provider sends `iss` with every authorization response (RFC 9207), so it is given its issuer identifier.
  const endpoints = { issuer: provider.issuer, authorizationEndpoint: `${provider.issuer}/auth`, tokenEndpoint: `${provider.issuer}/token` };
  byHand.mount(
    redis,
    options(byHand, { server: endpoints, fetchUser: async (_tokens, { fetch }) => (await fetch(`${byHand.url}/api/user`)).json() }),
    routes(byHand),
  );
  oauth2Discovery.mount(redis, options(oauth2Discovery, { issuer: provider.issuer, discovery: 'oauth2' }), routes(oauth2Discovery));
  failing.mount(
    redis,
    options(failing, { server: endpoints, fetchUser: (tokens, tools) => hook(tokens, tools), onError: (err) => reported.push(err) }),
    routes(failing),
  );
  const { issuer: _issuer, ...withoutIssuer } = endpoints;
  noIssuer.mount(redis, options(noIssuer, { server: withoutIssuer }), routes(noIssuer));
});

afterAll(async () => {
  await Promise.all([byHand, oauth2Discovery, failing, noIssuer].map((slot) => slot.listener.close()));
  await provider.close();
  redis.disconnect();
});

test('logs in at a server given by hand, with no discovery, no ID token and no nonce; fetchUser fills req.auth.user', async () => {
  const result = await byHand.browser.login(`${byHand.url}/login?returnTo=/whoami`);

  expect(result.status).toBe(200);
  expect(JSON.parse(result.body)).toEqual({
    isAuthenticated: true,
    claims: null,
    // The hook called the resource server with the new access token, which introspected it as alice's.
    user: { sub: 'alice', scope: SCOPE, scheme: 'Bearer' },
    expiresAt: expect.any(Number),
    idToken: null,
  });
  const authorization = new URL(result.steps[0]!.location!);
  expect(authorization.origin + authorization.pathname).toBe(`${provider.issuer}/auth`);
  expect(authorization.searchParams.get('scope')).toBe(SCOPE);
  expect(authorization.searchParams.has('nonce')).toBe(false);
  expect(authorization.searchParams.get('code_challenge_method')).toBe('S256');
  expect(requests.some((r) => r.includes('/.well-known/'))).toBe(false);
  expect(requests).toContain('POST /token');
});

test('the user from fetchUser is stored with the login in the session', async () => {
  const sessions = await storedSessions(redis, byHand.sessionPrefix);
  const logins = sessions.map((s) => (s.oauth as { login?: { user?: unknown; claims?: unknown } } | undefined)?.login).filter(Boolean);

  expect(logins).toEqual([expect.objectContaining({ user: { sub: 'alice', scope: SCOPE, scheme: 'Bearer' } })]);
  expect(logins[0]).not.toHaveProperty('claims');
});

test('req.auth.fetch sends the access token as a plain Bearer token when DPoP is off', async () => {
  const response = await byHand.browser.request(`${byHand.url}/call`);

  expect(JSON.parse(response.body)).toEqual({ scheme: 'Bearer', dpop: false, method: 'GET' });
});

test("discovery: 'oauth2' reads RFC 8414 metadata, not OpenID Connect discovery", async () => {
  const before = requests.length;
  const result = await oauth2Discovery.browser.login(`${oauth2Discovery.url}/login?returnTo=/whoami`);

  expect(result.status).toBe(200);
  expect(JSON.parse(result.body)).toMatchObject({ isAuthenticated: true, claims: null, user: null });
  const made = requests.slice(before);
  expect(made).toContain('GET /.well-known/oauth-authorization-server');
  expect(made).not.toContain('GET /.well-known/openid-configuration');
});

test.each([
  ['rejects', () => Promise.reject(new Error('user API down'))],
  ['resolves to no object', () => Promise.resolve('alice' as unknown as object)],
  ['resolves to something the session cannot store', () => Promise.resolve({ id: 1n } as object)],
  // Each of these passes through JSON as something ({} or a string), but none is the user: README says plain object.
  ['resolves to the Response (forgot .json())', async (_tokens, { fetch }) => fetch(`${failing.url}/api/user`)],
  ['resolves to a Map', async () => new Map([['sub', 'alice']])],
  ['resolves to a Date', async () => new Date(0)],
  ['resolves to a class instance', async () => new (class User { sub = 'alice'; })()],
  ['resolves to an array (control: refused before too)', async () => ['alice']],
  ['resolves to an object whose toJSON gives a string', async () => ({ toJSON: () => 'alice' })],
  ['resolves to an object whose toJSON gives an array', async () => ({ toJSON: () => ['alice'] })],
] satisfies Array<[string, NonNullable<AuthOptions['fetchUser']>]>)('a fetchUser that %s fails the login with user_fetch_failed and stores no login', async (_case, behaviour) => {
  hook = behaviour;
  failing.browser.jar.clear();
  const result = await failing.browser.login(`${failing.url}/login?returnTo=/whoami`);

  expect(result.status).toBe(502);
  expect(result.body).toContain('user_fetch_failed');
  expect(result.body).not.toContain('user API down');
  const after = await failing.browser.request(`${failing.url}/whoami`);
  expect(JSON.parse(after.body)).toMatchObject({ isAuthenticated: false, user: null });
  const sessions = await storedSessions(redis, failing.sessionPrefix);
  expect(sessions.filter((s) => (s.oauth as { login?: unknown } | undefined)?.login !== undefined)).toEqual([]);
});

test('a fetchUser that resolves to an object without a prototype (Object.create(null)) logs in with that user', async () => {
  hook = async () => Object.assign(Object.create(null) as Record<string, unknown>, { sub: 'alice', name: 'Alice' });
  failing.browser.jar.clear();
  const result = await failing.browser.login(`${failing.url}/login?returnTo=/whoami`);

  expect(result.status).toBe(200);
  expect(JSON.parse(result.body)).toMatchObject({ isAuthenticated: true, user: { sub: 'alice', name: 'Alice' } });
});

test("a fetchUser error that quotes the login's tokens keeps them out of the reported error and its cause", async () => {
  let quoted = '';
  hook = async (tokens) => {
    quoted = tokens.accessToken;
    throw new Error(`the user API refused ${tokens.accessToken}`);
  };
  reported.length = 0;
  failing.browser.jar.clear();
  const result = await failing.browser.login(`${failing.url}/login?returnTo=/whoami`);

  expect(result.status).toBe(502);
  expect(quoted.length).toBeGreaterThan(8);
  expect(reported).toHaveLength(1);
  const printed = inspectDeep(reported[0]);
  expect(printed).toContain('the user API refused [redacted]');
  expect(printed).not.toContain(quoted);
});

test('a server that sends `iss` (RFC 9207) needs `server.issuer`: without it the response is refused, naming the fix', async () => {
  const result = await noIssuer.browser.login(`${noIssuer.url}/login?returnTo=/whoami`);

  expect(result.status).toBe(400);
  expect(result.body).toContain('invalid_response');
  expect(result.body).toContain('server.issuer');
  const after = await noIssuer.browser.request(`${noIssuer.url}/whoami`);
  expect(JSON.parse(after.body)).toMatchObject({ isAuthenticated: false });
});

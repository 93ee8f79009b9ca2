import { createPrivateKey, randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, jest, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import type { ClientMetadata } from 'oidc-provider';
import { decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import { AuthError, type AuthOptions } from '../../lib/index.js';
import { checkClientAuthSupport, clientAuthentication } from '../../lib/client-auth.js';
import { resolveOptions } from '../../lib/options.js';
import { createServerResolver } from '../../lib/server.js';
import { connectRedis, type Listener } from '../helpers/app.js';
import { inspectDeep } from '../helpers/security.js';
import { startProvider, type TestProvider } from '../helpers/provider.js';
import { appSlot, clientKeyPair, recordRequests, startProviderWithClientKeys, startStubServer, type AppSlot, whoami } from './support.js';

const SECRET = 'client-auth-secret-not-for-production';

let redis: Redis;
beforeAll(() => {
  redis = connectRedis();
});
afterAll(() => redis.disconnect());

function base(slot: AppSlot, provider: TestProvider, clientId: string): AuthOptions {
  return {
    issuer: provider.issuer,
    clientId,
    redirectUri: slot.redirectUri,
    scope: 'openid',
    allowInsecureRequests: true,
    redis,
    keyPrefix: `test:${randomUUID()}:`,
  };
}

describe('every client authentication method against a provider that registered the client for it', () => {
  let provider: TestProvider;
  let requests: string[];
  const slots: Record<string, AppSlot> = {};
  const names = ['basic', 'post', 'jwtRsa', 'jwtEcPem', 'public', 'wrongMethod', 'wrongSecret'] as const;
  const tokenAuthorization: string[] = [];

  beforeAll(async () => {
    for (const name of names) slots[name] = await appSlot();
    const rsa = await clientKeyPair('RS256', 'rsa-key-1');
    const ec = await clientKeyPair('ES256', 'ec-key-1');
    const ecPem = createPrivateKey({ key: ec.privateJwk as never, format: 'jwk' }).export({ format: 'pem', type: 'sec1' }).toString();
    const common: Pick<ClientMetadata, 'grant_types' | 'response_types'> = { grant_types: ['authorization_code'], response_types: ['code'] };
    provider = await startProviderWithClientKeys({
      clients: [
        { ...common, client_id: 'basic', client_secret: SECRET, token_endpoint_auth_method: 'client_secret_basic', redirect_uris: [slots.basic!.redirectUri, slots.wrongMethod!.redirectUri, slots.wrongSecret!.redirectUri] },
        { ...common, client_id: 'post', client_secret: SECRET, token_endpoint_auth_method: 'client_secret_post', redirect_uris: [slots.post!.redirectUri] },
        { ...common, client_id: 'jwt-rsa', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [rsa.publicJwk] }, redirect_uris: [slots.jwtRsa!.redirectUri] },
        {
          ...common,
          client_id: 'jwt-ec',
          token_endpoint_auth_method: 'private_key_jwt',
          token_endpoint_auth_signing_alg: 'ES256',
          jwks: { keys: [ec.publicJwk] },
          redirect_uris: [slots.jwtEcPem!.redirectUri],
        },
        { ...common, client_id: 'public', token_endpoint_auth_method: 'none', redirect_uris: [slots.public!.redirectUri] },
      ],
    });
    requests = recordRequests(provider.server);
    // oidc-provider takes either way of sending a secret from a client registered for one: which was used is seen here.
    provider.server.prependListener('request', (req) => {
      if (req.method === 'POST' && req.url === '/token') tokenAuthorization.push(req.headers.authorization?.split(' ')[0] ?? 'none');
    });
    slots.basic!.mount(redis, { ...base(slots.basic!, provider, 'basic'), clientSecret: SECRET }, whoami);
    slots.post!.mount(redis, { ...base(slots.post!, provider, 'post'), clientSecret: SECRET, clientAuthMethod: 'client_secret_post' }, whoami);
    // A JWK that carries its kid: private_key_jwt is the default when privateKey is set.
    slots.jwtRsa!.mount(redis, { ...base(slots.jwtRsa!, provider, 'jwt-rsa'), privateKey: rsa.privateJwk }, whoami);
    // A PEM (SEC1) with its kid given beside it, and the token endpoint as the assertion's audience.
    slots.jwtEcPem!.mount(
      redis,
      { ...base(slots.jwtEcPem!, provider, 'jwt-ec'), clientAuthMethod: 'private_key_jwt', privateKey: { key: ecPem, kid: 'ec-key-1', audience: 'token_endpoint' } },
      whoami,
    );
    slots.public!.mount(redis, base(slots.public!, provider, 'public'), whoami);
    // No authentication for a confidential client: the provider must refuse the code exchange.
    slots.wrongMethod!.mount(redis, { ...base(slots.wrongMethod!, provider, 'basic'), clientAuthMethod: 'none' }, whoami);
    // The likeliest setup mistake: a wrong secret, sent the default way (client_secret_basic).
    slots.wrongSecret!.mount(redis, { ...base(slots.wrongSecret!, provider, 'basic'), clientSecret: `${SECRET}-wrong` }, whoami);
  });

  afterAll(async () => {
    await Promise.all(Object.values(slots).map((slot) => slot.listener.close()));
    await provider.close();
  });

  test.each([
    ['client_secret_basic', 'basic', 'Basic'],
    ['client_secret_post', 'post', 'none'],
    ['private_key_jwt with an RSA JWK', 'jwtRsa', 'none'],
    ['private_key_jwt with an EC PEM and the token endpoint as audience', 'jwtEcPem', 'none'],
    ['none (public client, PKCE only)', 'public', 'none'],
  ] as const)('%s logs in', async (_method, name, authorization) => {
    const slot = slots[name]!;
    const before = provider.count('grant.success');
    tokenAuthorization.length = 0;
    const result = await slot.browser.login(`${slot.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expect(tokenAuthorization).toEqual([authorization]);
    expect(JSON.parse(result.body)).toEqual({ isAuthenticated: true, sub: 'alice' });
    expect(provider.count('grant.success')).toBe(before + 1);
  });

  test('a confidential client that does not authenticate is refused by the provider (authentication is really checked)', async () => {
    const slot = slots.wrongMethod!;
    const result = await slot.browser.login(`${slot.url}/login?returnTo=/whoami`);

    // The app's configuration, not the user, is at fault: a 502, not a 400.
    expect(result.status).toBe(502);
    expect(result.body).toContain('token_exchange_failed');
    expect(result.body).toContain('invalid_client');
  });

  test('a wrong client secret is the client refused (502 invalid_client), though the server answers with a Basic challenge', async () => {
    const slot = slots.wrongSecret!;
    const result = await slot.browser.login(`${slot.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(502);
    expect(result.body).toContain('<code>token_exchange_failed</code>');
    expect(result.body).toContain('The token endpoint refused this client (invalid_client)');
    expect(result.body).not.toContain(SECRET);
  });

  test('the configuration, client key included, is built once per auth() instance, not per login', async () => {
    const slot = slots.jwtRsa!;
    slot.browser.jar.clear();
    const tokenCalls = requests.filter((r) => r === 'POST /token').length;
    const result = await slot.browser.login(`${slot.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expect(requests.filter((r) => r === 'POST /token').length).toBe(tokenCalls + 1);
    // One discovery for the whole instance: the configuration (client authentication included) is built once.
    expect(requests.filter((r) => r === 'GET /.well-known/openid-configuration').length).toBe(Object.keys(slots).length);
  });
});

describe('a method the server does not advertise fails at first use, naming the supported ones', () => {
  let provider: TestProvider;
  let post: AppSlot;
  let jwt: AppSlot;
  let jwtAlg: AppSlot;

  beforeAll(async () => {
    [post, jwt, jwtAlg] = await Promise.all([appSlot(), appSlot(), appSlot()]);
    const rsa = await clientKeyPair('RS256', 'rsa-key-2');
    provider = await startProvider({
      clients: [
        {
          client_id: 'basic',
          client_secret: SECRET,
          redirect_uris: [post.redirectUri],
          grant_types: ['authorization_code'],
          response_types: ['code'],
        },
      ],
      configuration: {
        clientAuthMethods: ['client_secret_basic', 'private_key_jwt', 'none'],
        enabledJWA: { clientAuthSigningAlgValues: ['ES256', 'EdDSA'] },
      },
    });
    post.mount(redis, { ...base(post, provider, 'basic'), clientSecret: SECRET, clientAuthMethod: 'client_secret_post' }, whoami);
    jwt.mount(redis, { ...base(jwt, provider, 'basic'), privateKey: rsa.privateJwk }, whoami);
    jwtAlg.mount(redis, { ...base(jwtAlg, provider, 'basic'), privateKey: { key: rsa.privateJwk, alg: 'PS256' } }, whoami);
  });

  afterAll(async () => {
    await Promise.all([post, jwt, jwtAlg].map((slot) => slot.listener.close()));
    await provider.close();
  });

  test('client_secret_post', async () => {
    const result = await post.browser.request(`${post.url}/login`, { headers: { accept: 'application/json' } });

    expect(result.status).toBe(502);
    expect(JSON.parse(result.body)).toMatchObject({
      error: 'discovery_failed',
      error_description: "The authorization server does not support clientAuthMethod 'client_secret_post'; it supports: client_secret_basic, private_key_jwt, none.",
    });
    expect(result.headers.get('set-cookie')).toBeNull();
  });

  test('private_key_jwt with an algorithm the server does not accept', async () => {
    for (const slot of [jwt, jwtAlg]) {
      const result = await slot.browser.request(`${slot.url}/login`, { headers: { accept: 'application/json' } });

      expect(result.status).toBe(502);
      const body = JSON.parse(result.body) as { error: string; error_description: string };
      expect(body.error).toBe('discovery_failed');
      expect(body.error_description).toMatch(/does not accept (RS256|PS256) client assertions; it accepts: ES256, EdDSA/);
    }
  });
});

describe('the advertised methods, checked without a provider', () => {
  const metadata = { issuer: 'https://idp.example.com', token_endpoint: 'https://idp.example.com/token' };
  const config = (extra: Partial<AuthOptions>) => resolveOptions({ issuer: metadata.issuer, clientId: 'app', redirectUri: 'https://app.example.com/callback', ...extra });

  test('a server that lists no methods supports client_secret_basic only (RFC 8414 §2)', () => {
    expect(() => checkClientAuthSupport(config({ clientSecret: SECRET }), metadata)).not.toThrow();
    expect(() => checkClientAuthSupport(config({ clientSecret: SECRET, clientAuthMethod: 'client_secret_post' }), metadata)).toThrow(
      expect.objectContaining({ code: 'discovery_failed', message: expect.stringContaining('it supports: client_secret_basic.') }),
    );
  });

  test('a server that lists no assertion algorithms takes private_key_jwt with any: there is no list to check against', async () => {
    const { privateJwk } = await clientKeyPair('ES256', 'k1');
    const listed = { ...metadata, token_endpoint_auth_methods_supported: ['private_key_jwt'] };

    expect(() => checkClientAuthSupport(config({ privateKey: privateJwk }), listed)).not.toThrow();
    // Control: a list without the key's algorithm is refused.
    expect(() => checkClientAuthSupport(config({ privateKey: privateJwk }), { ...listed, token_endpoint_auth_signing_alg_values_supported: ['RS256'] })).toThrow(
      expect.objectContaining({ code: 'discovery_failed' }),
    );
  });

  test('none is not checked: servers that take public clients often leave it out of their list', () => {
    const listed = { ...metadata, token_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'] };
    expect(() => checkClientAuthSupport(config({}), listed)).not.toThrow();
    expect(() => checkClientAuthSupport(config({}), metadata)).not.toThrow();
  });
});

describe('the private_key_jwt assertion', () => {
  const as = {
    issuer: 'https://idp.example.com',
    token_endpoint: 'https://idp.example.com/oauth2/token',
    revocation_endpoint: 'https://idp.example.com/oauth2/revoke',
    pushed_authorization_request_endpoint: 'https://idp.example.com/oauth2/par',
  };
  // What oauth4webapi has put into each kind of request's body when it asks for the client authentication.
  const TOKEN_REQUEST = { grant_type: 'authorization_code', code: 'c', redirect_uri: 'https://app.example.com/callback' };

  async function assertionOf(privateKey: AuthOptions['privateKey'], request: Record<string, string> = TOKEN_REQUEST): Promise<string> {
    const config = resolveOptions({ issuer: as.issuer, clientId: 'app', redirectUri: 'https://app.example.com/callback', privateKey });
    const authenticate = await clientAuthentication(config);
    const body = new URLSearchParams(request);
    await authenticate(as, { client_id: 'app' }, body, new Headers());
    expect(body.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    return body.get('client_assertion')!;
  }

  test.each([
    ['issuer', undefined, as.issuer],
    ['token_endpoint', 'token_endpoint' as const, as.token_endpoint],
  ])('is signed with the key, names its kid and alg, and has aud = %s', async (_name, audience, expected) => {
    const { privateJwk, publicJwk } = await clientKeyPair('RS256', 'kid-1');
    const assertion = await assertionOf({ key: privateJwk, ...(audience ? { audience } : {}) });

    expect(decodeProtectedHeader(assertion)).toMatchObject({ alg: 'RS256', kid: 'kid-1' });
    const { payload } = await jwtVerify(assertion, await importJWK(publicJwk, 'RS256'), { audience: expected, issuer: 'app', subject: 'app' });
    expect(payload.jti).toEqual(expect.any(String));
  });

  test.each([
    ['a refresh (token endpoint)', { grant_type: 'refresh_token', refresh_token: 'r' }, as.token_endpoint],
    ['a revocation (revocation endpoint)', { token: 't', token_type_hint: 'refresh_token' }, as.revocation_endpoint],
    ['a pushed authorization request (PAR endpoint)', { response_type: 'code', redirect_uri: 'https://app.example.com/callback' }, as.pushed_authorization_request_endpoint],
    // authorizationParams may carry any name a server wants, `token` and `grant_type` included.
    ["a pushed authorization request carrying the app's own token and grant_type parameters", { response_type: 'code', token: 'x', grant_type: 'y' }, as.pushed_authorization_request_endpoint],
  ])("with audience 'token_endpoint', %s names the endpoint it is sent to (Okta refuses any other)", async (_name, request, expected) => {
    const { privateJwk, publicJwk } = await clientKeyPair('RS256', 'kid-1');
    const assertion = await assertionOf({ key: privateJwk, audience: 'token_endpoint' }, request);

    await expect(jwtVerify(assertion, await importJWK(publicJwk, 'RS256'), { audience: expected })).resolves.toBeDefined();
    // The default names the issuer whatever the endpoint.
    const byIssuer = await assertionOf({ key: privateJwk }, request);
    await expect(jwtVerify(byIssuer, await importJWK(publicJwk, 'RS256'), { audience: as.issuer })).resolves.toBeDefined();
  });

  // RFC 7523 §3 allows the token endpoint as audience; a server configured by hand without an issuer has nothing else.
  test("a server by hand without an issuer: the default audience 'issuer' names the token endpoint", async () => {
    const { privateJwk, publicJwk } = await clientKeyPair('RS256', 'kid-1');
    const server = { authorizationEndpoint: 'https://idp.example.com/oauth2/authorize', tokenEndpoint: as.token_endpoint };
    const config = resolveOptions({ server, scope: 'read', clientId: 'app', redirectUri: 'https://app.example.com/callback', privateKey: privateJwk });
    const configuration = await createServerResolver(config)();
    const body = new URLSearchParams(TOKEN_REQUEST);
    await (await clientAuthentication(config))(configuration.serverMetadata(), { client_id: 'app' }, body, new Headers());

    await expect(jwtVerify(body.get('client_assertion')!, await importJWK(publicJwk, 'RS256'), { audience: as.token_endpoint })).resolves.toBeDefined();
  });

  // The process holds the key for as long as it runs: a key object that cannot be exported cannot leak its private
  // part through code that gets hold of it (a debugger, a dependency, a careless log).
  test('signs with a non-extractable key', async () => {
    const { privateJwk } = await clientKeyPair('ES256', 'kid-1');
    const sign = jest.spyOn(crypto.subtle, 'sign');
    try {
      await assertionOf(privateJwk);
      expect(sign).toHaveBeenCalledTimes(1);
      expect(sign.mock.calls[0]![1]).toMatchObject({ type: 'private', extractable: false });
    } finally {
      sign.mockRestore();
    }
  });

  test('an Ed25519 key signs as EdDSA', async () => {
    const { privateJwk, publicJwk } = await clientKeyPair('EdDSA', 'ed-1');
    const assertion = await assertionOf(privateJwk);

    expect(decodeProtectedHeader(assertion)).toMatchObject({ alg: 'EdDSA', kid: 'ed-1' });
    await expect(jwtVerify(assertion, await importJWK(publicJwk, 'EdDSA'))).resolves.toBeDefined();
  });
});

describe('a server that quotes the client assertion in its errors', () => {
  // A server that misbehaves on purpose: it refuses what each test says, quoting the client_assertion it was sent in its
  // error_description. An assertion is a credential until it expires (any holder can authenticate as the client with
  // it), so it must be redacted like the client secret.
  let stub: Listener;
  let app: AppSlot;
  let parApp: AppSlot;
  let refuse: { exchange: boolean; refresh: boolean } = { exchange: false, refresh: false };
  const sent: string[] = [];
  const reported: AuthError[] = [];

  function quoting(res: ServerResponse, assertion: string): void {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'invalid_request', error_description: `cannot accept client_assertion=${assertion} here` }));
  }

  beforeAll(async () => {
    [stub, app, parApp] = await Promise.all([
      startStubServer((form, res, path) => {
        const assertion = form.get('client_assertion') ?? '';
        sent.push(assertion);
        const grant = form.get('grant_type');
        if (path === '/par' || (grant === 'authorization_code' && refuse.exchange) || (grant === 'refresh_token' && refuse.refresh)) {
          return quoting(res, assertion);
        }
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify({ access_token: `stub-at-${randomUUID()}`, token_type: 'bearer', expires_in: 3600, refresh_token: `stub-rt-${randomUUID()}` }));
      }),
      appSlot(),
      appSlot(),
    ]);
    const { privateJwk } = await clientKeyPair('ES256', 'stub-key');
    const options = (slot: AppSlot, extra: Partial<AuthOptions> = {}): AuthOptions => ({
      server: { authorizationEndpoint: `${stub.url}/authorize`, tokenEndpoint: `${stub.url}/token`, pushedAuthorizationRequestEndpoint: `${stub.url}/par` },
      clientId: 'stub-client',
      privateKey: privateJwk,
      redirectUri: slot.redirectUri,
      scope: 'repo',
      allowInsecureRequests: true,
      redis,
      keyPrefix: `test:${randomUUID()}:`,
      onError: (err) => reported.push(err),
      ...extra,
    });
    app.mount(redis, options(app), (express) => {
      whoami(express);
      express.get('/api/refresh', async (req, res) => {
        try {
          res.json(await req.auth.refresh());
        } catch (err) {
          if (!(err instanceof AuthError)) throw err;
          res.status(err.status).json({ ...err.toJSON(), printed: inspectDeep(err) });
        }
      });
    });
    parApp.mount(redis, options(parApp, { pushedAuthorizationRequests: true }));
  });

  afterAll(async () => {
    await Promise.all([stub.close(), app.listener.close(), parApp.listener.close()]);
  });

  function expectRedacted(shown: string[], description: unknown): void {
    // The stub really was sent an assertion, and quoted it; the rest of its description still reaches the page.
    expect(sent.length).toBeGreaterThan(0);
    for (const assertion of sent) expect(assertion).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(description).toBe('cannot accept client_assertion=[redacted] here');
    const printed = [...shown, ...reported.map((err) => `${err.message} ${JSON.stringify(err)} ${inspectDeep(err)}`)];
    for (const text of printed) for (const assertion of sent) expect(text).not.toContain(assertion);
  }

  beforeEach(() => {
    sent.length = 0;
    reported.length = 0;
    refuse = { exchange: false, refresh: false };
    app.browser.jar.clear();
  });

  test('at the code exchange', async () => {
    refuse.exchange = true;
    const toCallback = await app.browser.follow(`${app.url}/login`, { stopBefore: (url) => url.pathname === '/callback' });
    const response = await app.browser.request(toCallback.steps.at(-1)!.location!, { headers: { accept: 'application/json' } });

    expect(response.status).toBe(400);
    const body = JSON.parse(response.body) as Record<string, unknown>;
    expect(body).toMatchObject({ error: 'token_exchange_failed', upstream_error: 'invalid_request' });
    expect(reported).toHaveLength(1);
    expectRedacted([response.body], body.upstream_error_description);
  });

  test('at a refresh', async () => {
    const login = await app.browser.follow(`${app.url}/login?returnTo=/whoami`);
    expect(JSON.parse(login.body)).toMatchObject({ isAuthenticated: true });
    sent.length = 0;
    refuse.refresh = true;
    const response = await app.browser.request(`${app.url}/api/refresh`, { headers: { accept: 'application/json' } });

    expect(response.status).toBe(502);
    const body = JSON.parse(response.body) as Record<string, unknown>;
    expect(body).toMatchObject({ error: 'refresh_failed', upstream_error: 'invalid_request' });
    expectRedacted([response.body], body.upstream_error_description);
  });

  test('at the pushed authorization request', async () => {
    const response = await parApp.browser.request(`${parApp.url}/login`, { headers: { accept: 'application/json' } });

    expect(response.status).toBe(502);
    const body = JSON.parse(response.body) as Record<string, unknown>;
    expect(body).toMatchObject({ error: 'par_failed', upstream_error: 'invalid_request' });
    expect(reported).toHaveLength(1);
    expectRedacted([response.body], body.upstream_error_description);
  });
});

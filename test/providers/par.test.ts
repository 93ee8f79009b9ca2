import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import type { AuthError, AuthOptions } from '../../lib/index.js';
import { connectRedis, listen, type Listener } from '../helpers/app.js';
import { startProvider, type TestProvider } from '../helpers/provider.js';
import { appSlot, recordRequests, storedSessions, type AppSlot, whoami } from './support.js';

const SECRET = 'par-secret-not-for-production';

let redis: Redis;
beforeAll(() => {
  redis = connectRedis();
});
afterAll(() => redis.disconnect());

function options(slot: AppSlot, issuer: string, clientId: string, extra: Partial<AuthOptions> = {}): AuthOptions {
  return {
    issuer,
    clientId,
    clientSecret: SECRET,
    redirectUri: slot.redirectUri,
    scope: 'openid',
    allowInsecureRequests: true,
    redis,
    keyPrefix: `test:${randomUUID()}:`,
    ...extra,
  };
}

function client(clientId: string, redirectUris: string[], extra: Record<string, unknown> = {}) {
  return {
    client_id: clientId,
    client_secret: SECRET,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code' as const],
    ...extra,
  };
}

/** The browser's authorization URL carries only client_id and request_uri (RFC 9126 §4). */
function expectPushed(location: string | undefined, issuer: string): void {
  const url = new URL(location ?? '');
  expect(url.origin + url.pathname).toBe(`${issuer}/auth`);
  expect([...url.searchParams.keys()].sort()).toEqual(['client_id', 'request_uri']);
  expect(url.searchParams.get('request_uri')).toMatch(/^urn:ietf:params:oauth:request_uri:/);
}

describe('PAR at a provider that offers it', () => {
  let provider: TestProvider;
  let requests: string[];
  let optIn: AppSlot;
  let required: AppSlot;
  let requiredWithoutOptIn: AppSlot;
  let refused: AppSlot;

  beforeAll(async () => {
    [optIn, required, requiredWithoutOptIn, refused] = await Promise.all([appSlot(), appSlot(), appSlot(), appSlot()]);
    provider = await startProvider({
      clients: [
        client('par-app', [optIn.redirectUri, refused.redirectUri]),
        client('par-required', [required.redirectUri, requiredWithoutOptIn.redirectUri], { require_pushed_authorization_requests: true }),
      ],
    });
    requests = recordRequests(provider.server);
    optIn.mount(redis, options(optIn, provider.issuer, 'par-app', { pushedAuthorizationRequests: true }), whoami);
    required.mount(redis, options(required, provider.issuer, 'par-required', { pushedAuthorizationRequests: true }), whoami);
    requiredWithoutOptIn.mount(redis, options(requiredWithoutOptIn, provider.issuer, 'par-required'), whoami);
    // A parameter the PAR endpoint refuses (oidc-provider checks prompt values there).
    refused.mount(redis, options(refused, provider.issuer, 'par-app', { pushedAuthorizationRequests: true, authorizationParams: { prompt: 'bogus' } }), whoami);
  });

  afterAll(async () => {
    await Promise.all([optIn, required, requiredWithoutOptIn, refused].map((slot) => slot.listener.close()));
    await provider.close();
  });

  test('pushedAuthorizationRequests: true pushes the request; the browser only carries client_id and request_uri', async () => {
    const result = await optIn.browser.login(`${optIn.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ isAuthenticated: true, sub: 'alice' });
    expectPushed(result.steps[0]?.location, provider.issuer);
    expect(requests).toContain('POST /request');
  });

  test('a client registered with require_pushed_authorization_requests logs in with PAR', async () => {
    const result = await required.browser.login(`${required.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expectPushed(result.steps[0]?.location, provider.issuer);
  });

  test('the same client without PAR is refused by the provider (the requirement is real)', async () => {
    const result = await requiredWithoutOptIn.browser.login(`${requiredWithoutOptIn.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(400);
    expect(result.body).toContain('authorization_error');
    expect(result.body).toContain('invalid_request');
  });

  test('a refused pushed request is par_failed (502) with the upstream error, and no session is stored', async () => {
    const result = await refused.browser.request(`${refused.url}/login`, { headers: { accept: 'application/json' } });

    expect(result.status).toBe(502);
    expect(JSON.parse(result.body)).toMatchObject({ error: 'par_failed', upstream_error: 'invalid_request' });
    expect(result.headers.get('set-cookie')).toBeNull();
    expect(await storedSessions(redis, refused.sessionPrefix)).toEqual([]);
  });
});

describe('a provider that requires PAR for every client', () => {
  let provider: TestProvider;
  let app: AppSlot;

  beforeAll(async () => {
    app = await appSlot();
    provider = await startProvider({
      clients: [client('any-app', [app.redirectUri])],
      configuration: { features: { devInteractions: { enabled: true }, pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: true } } },
    });
    app.mount(redis, options(app, provider.issuer, 'any-app'), whoami);
  });

  afterAll(async () => {
    await app.listener.close();
    await provider.close();
  });

  test('is used with PAR without opting in (require_pushed_authorization_requests in its metadata)', async () => {
    const result = await app.browser.login(`${app.url}/login?returnTo=/whoami`);

    expect(result.status).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ isAuthenticated: true, sub: 'alice' });
    expectPushed(result.steps[0]?.location, provider.issuer);
  });
});

describe('a provider without PAR', () => {
  let provider: TestProvider;
  let app: AppSlot;

  beforeAll(async () => {
    app = await appSlot();
    provider = await startProvider({
      clients: [client('any-app', [app.redirectUri])],
      configuration: { features: { devInteractions: { enabled: true }, pushedAuthorizationRequests: { enabled: false } } },
    });
    app.mount(redis, options(app, provider.issuer, 'any-app', { pushedAuthorizationRequests: true }), whoami);
  });

  afterAll(async () => {
    await app.listener.close();
    await provider.close();
  });

  test('fails at first use when the app asks for PAR, naming the missing endpoint', async () => {
    const result = await app.browser.request(`${app.url}/login`, { headers: { accept: 'application/json' } });

    expect(result.status).toBe(502);
    expect(JSON.parse(result.body)).toEqual(
      expect.objectContaining({
        error: 'discovery_failed',
        error_description: "The authorization server metadata's pushed_authorization_request_endpoint is missing; pushedAuthorizationRequests is on, and pushed authorization requests go there.",
      }),
    );
  });
});

describe('a PAR endpoint that fails after a transaction is already pending', () => {
  let stub: Listener;
  let app: AppSlot;
  /** `hang` answers nothing (until well after httpTimeout); `drop` closes the connection without an answer. */
  let parAnswer: { status: number; body: unknown; headers?: Record<string, string> } | 'hang' | 'drop';
  let pushed = 0;

  beforeAll(async () => {
    [stub, app] = await Promise.all([listen(), appSlot()]);
    // A server that misbehaves on purpose: its PAR endpoint answers what the test sets.
    stub.handle((req, res) => {
      req.resume();
      req.on('end', () => {
        pushed += 1;
        if (parAnswer === 'drop') return req.socket.destroy();
        if (parAnswer === 'hang') return void setTimeout(() => req.socket.destroy(), 3000);
        const { status, body, headers = { 'content-type': 'application/json' } } = parAnswer;
        res.writeHead(status, headers).end(typeof body === 'string' ? body : JSON.stringify(body));
      });
    });
    app.mount(
      redis,
      options(app, '', 'stub-app', {
        issuer: undefined,
        server: { authorizationEndpoint: `${stub.url}/authorize`, tokenEndpoint: `${stub.url}/token`, pushedAuthorizationRequestEndpoint: `${stub.url}/par` },
        scope: 'profile',
        pushedAuthorizationRequests: true,
        httpTimeout: 1000,
      }),
    );
  });

  afterAll(async () => {
    await Promise.all([stub.close(), app.listener.close()]);
  });

  async function pending(): Promise<number> {
    const sessions = await storedSessions(redis, app.sessionPrefix);
    expect(sessions).toHaveLength(1);
    return Object.keys((sessions[0]!.oauth as { tx?: object }).tx ?? {}).length;
  }

  test.each([
    ['refuses it (400)', { status: 400, body: { error: 'invalid_request' } }, 'par_failed', 502],
    ['fails (500)', { status: 500, body: { error: 'server_error' } }, 'idp_unreachable', 502],
    ['fails (503, no JSON body)', { status: 503, body: 'Service Unavailable', headers: { 'content-type': 'text/plain' } }, 'idp_unreachable', 502],
    // 429 is about the rate, not the request (RFC 6585 §4): transient, as at the token endpoint, body or not.
    ['turns it away (429, no JSON body)', { status: 429, body: 'Too Many Requests', headers: { 'content-type': 'text/plain', 'retry-after': '5' } }, 'idp_unreachable', 502],
    ['turns it away (429 with an OAuth error)', { status: 429, body: { error: 'slow_down' } }, 'idp_unreachable', 502],
    ['drops the connection without an answer', 'drop' as const, 'idp_unreachable', 502],
    ['does not answer within httpTimeout', 'hang' as const, 'idp_unreachable', 504],
  ])('when it %s, the session keeps only the earlier transaction', async (_case, failure, code, status) => {
    parAnswer = { status: 201, body: { request_uri: `urn:ietf:params:oauth:request_uri:${randomUUID()}`, expires_in: 60 } };
    const first = await app.browser.request(`${app.url}/login`);
    expect(first.status).toBe(302);
    const before = await pending();

    parAnswer = failure;
    const calls = pushed;
    const second = await app.browser.request(`${app.url}/login`, { headers: { accept: 'application/json' } });

    // Dropped without an answer on the kept-alive connection of the first push, which is what the server closing an
    // idle connection as the request goes out looks like: sent once more, on a new connection, dropped again.
    expect(pushed).toBe(calls + (failure === 'drop' ? 2 : 1));
    expect(second.status).toBe(status);
    expect(JSON.parse(second.body)).toMatchObject({ error: code });
    expect(await pending()).toBe(before);
  });
});

describe('a PAR endpoint that quotes the pushed request in its error', () => {
  let stub: Listener;
  let app: AppSlot;
  let pushedBody = new URLSearchParams();
  /** Quote the client secret in `error` too, not only in `error_description`. */
  let quoteInError = false;
  const reported: AuthError[] = [];

  beforeAll(async () => {
    [stub, app] = await Promise.all([listen(), appSlot()]);
    // A server that misbehaves on purpose: it refuses every pushed request, quoting what it was sent (the client
    // secret, with client_secret_post, and the nonce) in its error_description, as a careless server may.
    stub.handle((req, res) => {
      let raw = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => (raw += chunk));
      req.on('end', () => {
        pushedBody = new URLSearchParams(raw);
        const quoted = [...pushedBody].map(([name, value]) => `${name}=${value}`).join(' ');
        const error = quoteInError ? `invalid_request:${pushedBody.get('client_secret') ?? ''}` : 'invalid_request';
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error, error_description: `cannot accept ${quoted}` }));
      });
    });
    app.mount(
      redis,
      options(app, '', 'stub-app', {
        issuer: undefined,
        server: {
          issuer: stub.url,
          authorizationEndpoint: `${stub.url}/authorize`,
          tokenEndpoint: `${stub.url}/token`,
          jwksUri: `${stub.url}/jwks`,
          pushedAuthorizationRequestEndpoint: `${stub.url}/par`,
        },
        clientAuthMethod: 'client_secret_post',
        pushedAuthorizationRequests: true,
        onError: (err) => reported.push(err),
      }),
    );
  });

  afterAll(async () => {
    await Promise.all([stub.close(), app.listener.close()]);
  });

  test('neither the page nor the reported error shows the client secret or the nonce it echoed', async () => {
    const json = await app.browser.request(`${app.url}/login`, { headers: { accept: 'application/json' } });
    const html = await app.browser.request(`${app.url}/login`);

    // The stub really was sent both, and quoted both.
    expect(pushedBody.get('client_secret')).toBe(SECRET);
    const nonce = pushedBody.get('nonce');
    expect(nonce).toEqual(expect.any(String));
    expect(json.status).toBe(502);
    expect(JSON.parse(json.body)).toMatchObject({ error: 'par_failed', upstream_error: 'invalid_request' });
    // The rest of the description still reaches the page (redacted, not dropped).
    expect(JSON.parse(json.body).upstream_error_description).toMatch(/^cannot accept .*client_secret=\[redacted\]/);
    expect(reported).toHaveLength(2);
    for (const shown of [json.body, html.body, ...reported.map((err) => `${err.message} ${JSON.stringify(err)} ${inspect(err, { depth: 10 })}`)]) {
      expect(shown).not.toContain(SECRET);
      expect(shown).not.toContain(nonce);
    }
  });

  test('nor the error code, should the server put the secret there', async () => {
    quoteInError = true;
    reported.length = 0;
    try {
      const json = await app.browser.request(`${app.url}/login`, { headers: { accept: 'application/json' } });

      expect(pushedBody.get('client_secret')).toBe(SECRET);
      expect(JSON.parse(json.body)).toMatchObject({ error: 'par_failed', upstream_error: 'invalid_request:[redacted]' });
      for (const shown of [json.body, ...reported.map((err) => `${err.message} ${JSON.stringify(err)} ${inspect(err, { depth: 10 })}`)]) {
        expect(shown).not.toContain(SECRET);
      }
    } finally {
      quoteInError = false;
    }
  });
});

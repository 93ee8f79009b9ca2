import { afterAll, beforeAll, beforeEach, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import { connectRedis, type Listener } from '../helpers/app.js';
import { appSlot, clearSessions, startStubServer, stubClientOptions, storedSessions, type AppSlot } from './support.js';

/**
 * A server that misbehaves on purpose, the way real plain-OAuth servers do: its authorization endpoint answers at once
 * (no `iss`, no metadata) and its token endpoint answers whatever the test sets.
 */
let stub: Listener;
let app: AppSlot;
let redis: Redis;
let answer: { status: number; type: string; body: string; headers?: Record<string, string> };
const tokenRequests: URLSearchParams[] = [];

const SECRET_TOKEN = 'stub-access-token-never-shown';

beforeAll(async () => {
  [stub, app] = await Promise.all([
    startStubServer((form, res) => {
      tokenRequests.push(form);
      res.writeHead(answer.status, { 'content-type': answer.type, 'cache-control': 'no-store', ...answer.headers }).end(answer.body);
    }),
    appSlot(),
  ]);
  redis = connectRedis();
  app.mount(
    redis,
    { ...stubClientOptions(stub, app, redis) },
    (express) => {
      express.get('/whoami', (req, res) => {
        res.json({ isAuthenticated: req.auth.isAuthenticated, claims: req.auth.claims ?? null, expiresAt: req.auth.tokens?.expiresAt ?? null });
      });
    },
  );
});

afterAll(async () => {
  await Promise.all([stub.close(), app.listener.close()]);
  redis.disconnect();
});

beforeEach(async () => {
  app.browser.jar.clear();
  await clearSessions(redis, app.sessionPrefix);
  tokenRequests.length = 0;
});

const json = (value: unknown) => ({ status: 200, type: 'application/json', body: JSON.stringify(value) });

test('a token response without expires_in logs in with an unknown expiry, which never counts as expired', async () => {
  answer = json({ access_token: SECRET_TOKEN, token_type: 'bearer', scope: 'repo,read:user' });
  const result = await app.browser.follow(`${app.url}/login?returnTo=/whoami`);

  expect(result.status).toBe(200);
  expect(JSON.parse(result.body)).toEqual({ isAuthenticated: true, claims: null, expiresAt: null });
  const token = await app.browser.request(`${app.url}/token`, { headers: { accept: 'application/json' } });
  expect(JSON.parse(token.body)).toEqual({ accessToken: SECRET_TOKEN });
  // client_secret_post, PKCE verifier, and the exact redirect_uri went to the token endpoint.
  expect(tokenRequests).toHaveLength(1);
  expect(Object.fromEntries(tokenRequests[0]!)).toMatchObject({
    grant_type: 'authorization_code',
    client_id: 'stub-client',
    client_secret: 'stub-secret-not-for-production',
    redirect_uri: app.redirectUri,
    code_verifier: expect.stringMatching(/^[A-Za-z0-9_-]{43,128}$/),
  });
});

test.each([
  ['an HTML page', { status: 200, type: 'text/html', body: '<html><body>Sign in</body></html>' }, 'it is not JSON'],
  ['a form-encoded body', { status: 200, type: 'application/x-www-form-urlencoded', body: `access_token=${SECRET_TOKEN}&token_type=bearer` }, 'it is not JSON'],
  ['a JSON array', json([{ access_token: SECRET_TOKEN, token_type: 'bearer' }]), 'it is not a JSON object'],
  ['a JSON string', json(SECRET_TOKEN), 'it is not a JSON object'],
  ['JSON without access_token', json({ token_type: 'bearer', expires_in: 3600 }), 'its access_token is missing or malformed'],
  ['JSON without token_type', json({ access_token: SECRET_TOKEN }), 'its token_type is missing or malformed'],
  ['token_type mac', json({ access_token: SECRET_TOKEN, token_type: 'mac' }), 'its token_type is neither Bearer nor DPoP'],
  ['an expires_in that is not a number', json({ access_token: SECRET_TOKEN, token_type: 'bearer', expires_in: 'soon' }), 'its expires_in is missing or malformed'],
  ['a refresh_token that is not a string', json({ access_token: SECRET_TOKEN, token_type: 'bearer', refresh_token: 42 }), 'its refresh_token is missing or malformed'],
  ['a scope that is not a string', json({ access_token: SECRET_TOKEN, token_type: 'bearer', scope: 7 }), 'its scope is missing or malformed'],
  [
    'an error object with HTTP 200 (as GitHub answers)',
    json({ error: 'bad_verification_code', error_description: 'The code passed is incorrect or expired.' }),
    'the token endpoint answered with error bad_verification_code',
  ],
])('a token response that is %s is refused with token_exchange_failed, and no login is stored', async (_case, bad, why) => {
  answer = bad;
  const result = await app.browser.follow(`${app.url}/login?returnTo=/whoami`);

  expect(tokenRequests).toHaveLength(1);
  expect(result.status).toBe(400);
  expect(result.body).toContain('token_exchange_failed');
  expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toBe(`The token response was refused: ${why}.`);
  expect(result.body).not.toContain(SECRET_TOKEN);
  const after = await app.browser.request(`${app.url}/whoami`);
  expect(JSON.parse(after.body)).toMatchObject({ isAuthenticated: false });
  const sessions = await storedSessions(redis, app.sessionPrefix);
  expect(sessions.filter((s) => (s.oauth as { login?: unknown } | undefined)?.login !== undefined)).toEqual([]);
});

test.each([
  ['without an error code', 'Basic realm="stub"', 'HTTP 401', undefined],
  ['naming invalid_client', 'Basic realm="stub", error="invalid_client", error_description="client authentication failed"', 'invalid_client', 'invalid_client'],
])('a 401 challenge (WWW-Authenticate) %s is the client refused: 502 token_exchange_failed, no login stored', async (_case, challenge, reason, upstream) => {
  // How servers answer a wrong client secret (RFC 6749 §5.2); openid-client throws these before reading the body.
  answer = { status: 401, type: 'application/json', body: JSON.stringify({ error: 'invalid_client' }), headers: { 'www-authenticate': challenge } };
  const result = await app.browser.follow(`${app.url}/login?returnTo=/whoami`);

  expect(tokenRequests).toHaveLength(1);
  expect(result.status).toBe(502);
  expect(result.body).toContain('<code>token_exchange_failed</code>');
  expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toBe(
    `The token endpoint refused this client (${reason}): check its credentials, authentication method and registration at the authorization server.`,
  );
  expect(/The authorization server said: <code>(.*?)<\/code>/.exec(result.body)?.[1]).toBe(upstream);
  const after = await app.browser.request(`${app.url}/whoami`);
  expect(JSON.parse(after.body)).toMatchObject({ isAuthenticated: false });
});

test('a challenge with another status than 401 and no error code is not blamed on the client: 400 token_exchange_failed', async () => {
  // RFC 6749 §5.2 pairs a challenge with 401 for a client that failed to authenticate; on any other status it says
  // nothing about the client's credentials, so the page must not send the operator to check them.
  answer = { status: 400, type: 'application/json', body: '{}', headers: { 'www-authenticate': 'Bearer realm="stub"' } };
  const result = await app.browser.follow(`${app.url}/login?returnTo=/whoami`);

  expect(tokenRequests).toHaveLength(1);
  expect(result.status).toBe(400);
  expect(result.body).toContain('<code>token_exchange_failed</code>');
  expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toMatch(/^The token response was refused: /);
  const after = await app.browser.request(`${app.url}/whoami`);
  expect(JSON.parse(after.body)).toMatchObject({ isAuthenticated: false });
});

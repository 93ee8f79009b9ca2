/**
 * Token-endpoint failures that a correct server (oidc-provider) never produces, at the code exchange and at refresh.
 * A bare stub server answers whatever each test sets.
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import type { Request, Response } from 'express';
import type { Redis } from 'ioredis';
import * as client from 'openid-client';
import { AuthError } from '../../lib/index.js';
import { exchangeError, refreshError, sanitisedCause } from '../../lib/upstream.js';
import { connectRedis, type Listener } from '../helpers/app.js';
import { inspectDeep } from '../helpers/security.js';
import { appSlot, clearSessions, startStubServer, stubClientOptions, type AppSlot } from './support.js';

/** A token-endpoint answer; `stall` sends the headers and half a body, then nothing; `reset` drops the connection after them. */
type Answer = { status: number; type: string; body: string; headers?: Record<string, string> } | 'stall' | 'reset';

let stub: Listener;
let app: AppSlot;
let redis: Redis;
/** What the token endpoint answers to the refresh-token grant (given its form); the code exchange answers `exchangeAnswer`. */
let refreshAnswer: Answer | ((form: URLSearchParams) => Answer);
let exchangeAnswer: Answer | undefined;
const grants: string[] = [];
/** Every token the stub handed out, to look for where it must not be. */
const issued: string[] = [];

const HTTP_TIMEOUT = 1000;
const PARTIAL_BODY = '{"access_token":';

function send(res: ServerResponse, answer: Answer): void {
  if (answer === 'stall' || answer === 'reset') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.write(PARTIAL_BODY);
    // A stalled body stays open until the client gives up; a reset one is cut off once the client is reading it.
    if (answer === 'reset') setTimeout(() => res.socket?.destroy(), 50);
    return;
  }
  res.writeHead(answer.status, { 'content-type': answer.type, 'cache-control': 'no-store', ...answer.headers }).end(answer.body);
}

function tokens(): Answer {
  const access = `stub-at-${randomUUID()}`;
  const refresh = `stub-rt-${randomUUID()}`;
  issued.push(access, refresh);
  return json(200, { access_token: access, token_type: 'bearer', expires_in: 3600, refresh_token: refresh });
}

const json = (status: number, value: unknown): Answer => ({ status, type: 'application/json', body: JSON.stringify(value) });

/**
 * Bodies `JSON.parse` fails on, around a value that must never be shown: V8's message quotes about ten characters on
 * either side of the offending one ("Unexpected token 'L', ...\"sh_token\":LEAKYnewRe\"... is not valid JSON").
 */
const LEAK = 'LEAKY';
const b64u = (text: string) => Buffer.from(text).toString('base64url');
const unquotedToken = (): Answer => ({
  status: 200,
  type: 'application/json',
  body: `{"access_token":"stub-at","token_type":"bearer","refresh_token":${LEAK}newRefreshToken-${randomUUID()}}`,
});
const idTokenPayloadNotJson = (): Answer =>
  json(200, { access_token: 'stub-at', token_type: 'bearer', id_token: `${b64u('{"alg":"RS256"}')}.${b64u(`{"sub":${LEAK}subject-${randomUUID()}}`)}.c2ln` });

beforeAll(async () => {
  [stub, app] = await Promise.all([
    startStubServer((form, res) => {
      const grant = form.get('grant_type') ?? '';
      grants.push(grant);
      if (grant !== 'refresh_token') send(res, exchangeAnswer ?? tokens());
      else send(res, typeof refreshAnswer === 'function' ? refreshAnswer(form) : refreshAnswer);
    }),
    appSlot(),
  ]);
  redis = connectRedis();
  app.mount(
    redis,
    { ...stubClientOptions(stub, app, redis), httpTimeout: HTTP_TIMEOUT },
    (express) => {
      express.get('/whoami', (req, res) => res.json({ isAuthenticated: req.auth.isAuthenticated }));
      // A forced refresh that answers with the AuthError's JSON, plus everything a careless app could print of it.
      express.get('/api/refresh', async (req: Request, res: Response) => {
        try {
          res.json({ accessToken: (await req.auth.refresh()).accessToken });
        } catch (err) {
          if (!(err instanceof AuthError)) throw err;
          res.status(err.status).json({ ...err.toJSON(), printed: [err.message, String(err), err.stack, inspectDeep(err)].join('\n') });
        }
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
  grants.length = 0;
  exchangeAnswer = undefined;
});

async function whoami(): Promise<{ isAuthenticated: boolean }> {
  return JSON.parse((await app.browser.request(`${app.url}/whoami`)).body) as { isAuthenticated: boolean };
}

describe('refresh', () => {
  beforeEach(async () => {
    const login = await app.browser.follow(`${app.url}/login?returnTo=/whoami`);
    expect(JSON.parse(login.body)).toEqual({ isAuthenticated: true });
  });

  async function refresh(answer: typeof refreshAnswer): Promise<{ status: number; body: Record<string, unknown> }> {
    refreshAnswer = answer;
    const response = await app.browser.request(`${app.url}/api/refresh`, { headers: { accept: 'application/json' } });
    expect(grants).toEqual(['authorization_code', 'refresh_token']);
    // Whatever failed, the login's tokens are in neither the answer nor anything the app could print of the error.
    for (const token of issued) expect(response.body.includes(token) ? `leaks ${token}` : 'clean').toBe('clean');
    return { status: response.status, body: JSON.parse(response.body) as Record<string, unknown> };
  }

  test.each([
    ['bad_refresh_token', 'The refresh token passed is incorrect or expired.'],
    ['invalid_grant', undefined],
  ])('a 200 answer with error %s (as GitHub answers a dead refresh token) ends the login: 401 login_required', async (error, description) => {
    const answer = await refresh(json(200, { error, ...(description === undefined ? {} : { error_description: description }) }));

    expect(answer.status).toBe(401);
    expect(answer.body).toMatchObject({
      error: 'login_required',
      error_description: `The authorization server ended this login (${error}); log in again.`,
      upstream_error: error,
      ...(description === undefined ? {} : { upstream_error_description: description }),
    });
    expect(await whoami()).toEqual({ isAuthenticated: false });
  });

  test('a 200 answer whose error_description echoes the refresh token keeps it redacted', async () => {
    let refreshToken = '';
    const answer = await refresh((form) => {
      refreshToken = form.get('refresh_token') ?? '';
      return json(200, { error: 'bad_refresh_token', error_description: `refresh token ${refreshToken} is expired` });
    });

    expect(refreshToken).toMatch(/^stub-rt-/);
    expect(answer.status).toBe(401);
    expect(answer.body).toMatchObject({ upstream_error: 'bad_refresh_token', upstream_error_description: 'refresh token [redacted] is expired' });
    expect(JSON.stringify(answer.body)).not.toContain(refreshToken);
  });

  test('an error code that echoes the refresh token keeps it redacted, as a description does', async () => {
    // `error` is meant to be a fixed ASCII code, but a server can put anything there, and it reaches the message.
    let refreshToken = '';
    const answer = await refresh((form) => {
      refreshToken = form.get('refresh_token') ?? '';
      return json(400, { error: `invalid_request:${refreshToken}` });
    });

    expect(refreshToken).toMatch(/^stub-rt-/);
    expect(answer.status).toBe(502);
    expect(answer.body).toMatchObject({
      error: 'refresh_failed',
      error_description: 'The token endpoint refused the refresh: invalid_request:[redacted].',
      upstream_error: 'invalid_request:[redacted]',
    });
  });

  test('a JWE an error quotes (five parts: an encrypted ID token, say) is redacted whole, as a signed JWT is', async () => {
    const jwe = [b64u('{"alg":"RSA-OAEP-256","enc":"A256GCM"}'), b64u('wrapped key'), b64u('iv'), b64u('ciphertext of the claims'), b64u('tag')].join('.');
    const answer = await refresh(json(400, { error: 'invalid_request', error_description: `cannot use ${jwe} here` }));

    expect(answer.status).toBe(502);
    expect(answer.body).toMatchObject({ error: 'refresh_failed', upstream_error_description: 'cannot use [redacted] here' });
  });

  test('a 200 answer with another error is a refusal that keeps the login: 502 refresh_failed naming the upstream error', async () => {
    const answer = await refresh(json(200, { error: 'unsupported_token_type', error_description: 'Not this one.' }));

    expect(answer.status).toBe(502);
    expect(answer.body).toMatchObject({
      error: 'refresh_failed',
      error_description: 'The token endpoint refused the refresh: unsupported_token_type.',
      upstream_error: 'unsupported_token_type',
      upstream_error_description: 'Not this one.',
    });
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  test('a 200 answer with an oversized error keeps it cut short: 100 characters of error, 500 of description', async () => {
    const answer = await refresh(json(200, { error: 'e'.repeat(1_000), error_description: 'd'.repeat(2_000) }));

    expect(answer.status).toBe(502);
    expect(answer.body).toMatchObject({ error: 'refresh_failed', upstream_error: 'e'.repeat(100), upstream_error_description: 'd'.repeat(500) });
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  test("GitHub's wrong-credentials answer (200 incorrect_client_credentials) is the client refused, the login kept", async () => {
    const answer = await refresh(json(200, { error: 'incorrect_client_credentials', error_description: 'The client_id and/or client_secret passed are incorrect.' }));

    expect(answer.status).toBe(502);
    expect(answer.body).toMatchObject({ error: 'refresh_failed', upstream_error: 'incorrect_client_credentials' });
    expect(String(answer.body.error_description)).toMatch(/^The token endpoint refused this client \(incorrect_client_credentials\)/);
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  test.each([
    ['401 invalid_grant', json(401, { error: 'invalid_grant' })],
    ['200 invalid_client', json(200, { error: 'invalid_client' })],
  ])('a %s is the client refused (its credentials), not the end of this login: 502 refresh_failed, the login is kept', async (_case, answer) => {
    const result = await refresh(answer);

    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ error: 'refresh_failed' });
    expect(String(result.body.error_description)).toMatch(/^The token endpoint refused this client/);
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  // openid-client throws on a challenge before reading the body: the challenge, and its status, are all there is.
  test.each<[string, string, string, Record<string, string>]>([
    ['without an error code', 'Basic realm="stub"', 'HTTP 401', {}],
    [
      'naming the error and its description',
      'Basic realm="stub", error="invalid_client", error_description="client authentication failed"',
      'invalid_client',
      { upstream_error: 'invalid_client', upstream_error_description: 'client authentication failed' },
    ],
  ])('a 401 challenge (WWW-Authenticate) %s is the client refused, not the end of this login: 502 refresh_failed, the login is kept', async (_case, challenge, reason, upstream) => {
    const result = await refresh({ status: 401, type: 'application/json', body: '{"error":"invalid_grant"}', headers: { 'www-authenticate': challenge } });

    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ error: 'refresh_failed', ...upstream });
    expect(String(result.body.error_description)).toBe(
      `The token endpoint refused this client (${reason}): check its credentials, authentication method and registration at the authorization server.`,
    );
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  test.each([
    ['429 with an OAuth error', json(429, { error: 'slow_down' })],
    ['429 without a body', { status: 429, type: 'text/plain', body: 'Too Many Requests' }],
    ['503 with an OAuth error', json(503, { error: 'temporarily_unavailable' })],
  ])('a %s is transient: 503 refresh_failed, the login is kept', async (_case, answer) => {
    const result = await refresh(answer);

    expect(result.status).toBe(503);
    expect(result.body).toMatchObject({ error: 'refresh_failed' });
    expect(String(result.body.error_description)).toMatch(/^The token endpoint failed to refresh the tokens \(HTTP (429|503)\); try again\.$/);
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  test('a body that is not JSON is refused with a fixed message: no part of it (a new token) is quoted, in the message or the cause', async () => {
    const result = await refresh(unquotedToken());

    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ error: 'refresh_failed', error_description: 'The refresh response was refused: it is not JSON.' });
    // The cause still says what failed, without the body.
    expect(String(result.body.printed)).toContain('SyntaxError: invalid JSON');
    expect(String(result.body.printed)).not.toContain(LEAK);
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  test("a body that is not JSON keeps where the parser stopped in the cause: its position, not the parser's quote", async () => {
    const result = await refresh({ status: 200, type: 'application/json', body: `{"access_token":"stub-at" "refresh_token":"${LEAK}newRefreshToken"}` });

    expect(result.status).toBe(502);
    expect(result.body).toMatchObject({ error: 'refresh_failed', error_description: 'The refresh response was refused: it is not JSON.' });
    expect(String(result.body.printed)).toMatch(/SyntaxError: invalid JSON at position \d+ \(the parser's message is withheld: it quotes the input\)/);
    expect(String(result.body.printed)).not.toContain(LEAK);
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });

  test('a refreshed ID token whose payload is not JSON ends the login without quoting the payload', async () => {
    const result = await refresh(idTokenPayloadNotJson());

    expect(result.status).toBe(401);
    expect(result.body).toMatchObject({
      error: 'login_required',
      error_description: 'The refreshed ID token is invalid (failed to parse JWT Payload body as base64url encoded JSON); log in again.',
    });
    expect(String(result.body.printed)).not.toContain(LEAK);
    expect(await whoami()).toEqual({ isAuthenticated: false });
  });

  test.each([
    ['stalls past httpTimeout', 'stall' as const, 'The token endpoint did not answer the refresh in time; try again.'],
    ['is cut off (connection reset)', 'reset' as const, 'The token endpoint could not be reached to refresh the tokens; try again.'],
  ])('a response body that %s after the headers is transient: 503 refresh_failed, the login is kept', async (_case, answer, message) => {
    const started = Date.now();
    const result = await refresh(answer);

    expect(result.status).toBe(503);
    expect(result.body).toMatchObject({ error: 'refresh_failed', error_description: message });
    if (answer === 'stall') expect(Date.now() - started).toBeGreaterThanOrEqual(HTTP_TIMEOUT - 50);
    expect(await whoami()).toEqual({ isAuthenticated: true });
  });
});

describe('code exchange', () => {
  async function exchange(answer: Answer): Promise<{ status: number; body: string }> {
    exchangeAnswer = answer;
    const result = await app.browser.follow(`${app.url}/login?returnTo=/whoami`);
    expect(grants).toEqual(['authorization_code']);
    expect(await whoami()).toEqual({ isAuthenticated: false });
    return result;
  }

  test.each([
    ['stalls past httpTimeout', 'stall' as const, 504, 'The token endpoint did not answer in time.'],
    ['is cut off (connection reset)', 'reset' as const, 502, 'The token endpoint could not be reached.'],
  ])('a response body that %s after the headers is idp_unreachable, not a refusal', async (_case, answer, status, message) => {
    const result = await exchange(answer);

    expect(result.status).toBe(status);
    expect(result.body).toContain('<code>idp_unreachable</code>');
    expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toBe(message);
  });

  test.each([
    ['with an OAuth error', json(429, { error: 'slow_down' })],
    ['without a body', { status: 429, type: 'text/plain', body: 'Too Many Requests' }],
  ])('a 429 %s is idp_unreachable (502), not a refused code', async (_case, answer) => {
    const result = await exchange(answer);

    expect(result.status).toBe(502);
    expect(result.body).toContain('<code>idp_unreachable</code>');
    expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toBe('The token endpoint failed (HTTP 429).');
  });

  test.each(['invalid_client', 'unauthorized_client', 'unsupported_grant_type', 'incorrect_client_credentials'])('%s sent with HTTP 200 is the client refused (502), as with its own status', async (error) => {
    const result = await exchange(json(200, { error }));

    expect(result.status).toBe(502);
    expect(result.body).toContain('<code>token_exchange_failed</code>');
    expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toMatch(new RegExp(`^The token endpoint refused this client \\(${error}\\)`));
  });

  test("a body that is not JSON is not taken for an ID-token failure when the text JSON.parse quotes reads like one", async () => {
    const result = await exchange({ status: 200, type: 'application/json', body: '{"access_token":"stub-at","token_type":"bearer","note":JWT signature ID Token}' });

    expect(result.status).toBe(400);
    expect(result.body).toContain('<code>token_exchange_failed</code>');
    expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toBe('The token response was refused: it is not JSON.');
  });

  test('an ID token whose payload is not JSON is invalid_id_token, without quoting the payload', async () => {
    const result = await exchange(idTokenPayloadNotJson());

    expect(result.status).toBe(400);
    expect(result.body).toContain('<code>invalid_id_token</code>');
    expect(/<p>(.*?)<\/p>/.exec(result.body)?.[1]).toBe('The ID token is invalid: failed to parse JWT Payload body as base64url encoded JSON.');
    expect(result.body).not.toContain(LEAK);
  });

});

test.each([
  ['a token response that is not JSON', unquotedToken],
  ['an ID token whose payload is not JSON', idTokenPayloadNotJson],
])('the raw openid-client error for %s quotes the body; no AuthError made of it does, cause included', async (_case, answer) => {
  // openid-client's own error, from a real request to the stub: what the library receives.
  refreshAnswer = answer();
  const configuration = new client.Configuration({ issuer: stub.url, token_endpoint: `${stub.url}/token` }, 'stub-client', undefined, client.ClientSecretPost('stub-secret'));
  client.allowInsecureRequests(configuration);
  const raw = await client.refreshTokenGrant(configuration, 'stub-rt').then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(inspectDeep(raw)).toContain(LEAK);

  for (const err of [exchangeError(raw), refreshError(raw)]) {
    const printed = [err.message, JSON.stringify(err), String(err), err.stack, inspectDeep(err), inspectDeep(err.cause)].join('\n');
    expect(printed).not.toContain(LEAK);
    expect(printed).toContain('SyntaxError: invalid JSON');
  }
});

test("the sanitised cause of an OAuth error answer keeps its plain facts: name, code, HTTP status, error and description", async () => {
  refreshAnswer = json(400, { error: 'invalid_grant', error_description: 'the grant is gone' });
  const configuration = new client.Configuration({ issuer: stub.url, token_endpoint: `${stub.url}/token` }, 'stub-client', undefined, client.ClientSecretPost('stub-secret'));
  client.allowInsecureRequests(configuration);
  const raw = await client.refreshTokenGrant(configuration, 'stub-rt').then(
    () => undefined,
    (err: unknown) => err,
  );

  for (const err of [exchangeError(raw), refreshError(raw)]) {
    expect(err.cause).toMatchObject({ name: 'ResponseBodyError', code: 'OAUTH_RESPONSE_BODY_ERROR', status: 400, error: 'invalid_grant', error_description: 'the grant is gone' });
  }
});

test('the sanitised cause has the secrets redacted from the message and stack of every error in the chain', () => {
  const secret = 'echoed-secret-value';
  const cause = sanitisedCause(new Error(`outer ${secret}`, { cause: new Error(`inner ${secret}`) }), [secret]);

  expect(cause?.message).toBe('outer [redacted]');
  expect((cause?.cause as Error | undefined)?.message).toBe('inner [redacted]');
  expect(inspectDeep(cause)).not.toContain(secret);
});

test('a SyntaxError that is not a JSON.parse failure (WebCrypto refusing a key) keeps its message in the sanitised cause', async () => {
  const { privateKey } = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const jwk = await crypto.subtle.exportKey('jwk', privateKey);
  const raw = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, []).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(raw).toMatchObject({ name: 'SyntaxError' });

  expect(sanitisedCause(raw)?.message).toBe((raw as Error).message);
});

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';
import { unpackTokens } from '../../lib/tokens.js';
import { Browser } from '../helpers/browser.js';
import { browserSessionId, plantTransaction } from '../helpers/security.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => stack.close());

const isCallback = (u: URL) => u.pathname === '/callback';
const tokenGrants = () => stack.provider.count('grant.success');

/** Runs the provider side of a login and returns the callback URL the browser would open. */
async function authorize(browser: Browser, returnTo = '/me'): Promise<URL> {
  const res = await browser.login(`${stack.appUrl}/login?returnTo=${encodeURIComponent(returnTo)}`, { stopAtCallback: isCallback });
  return new URL(res.steps.at(-1)!.location!);
}

function json(browser: Browser): Browser {
  browser.headers = { accept: 'application/json' };
  return browser;
}

/**
 * Runs a login to its callback, tampers with the callback URL, requests it, and checks the refusal: the status, the
 * error code, no token request, and no login for that browser.
 */
async function expectRefusedCallback(tamper: (u: URL) => void, status: number, error: string, options: { plant?: boolean } = {}): Promise<void> {
  const browser = json(new Browser());
  const callback = await authorize(browser);
  const state = callback.searchParams.get('state')!;
  tamper(callback);
  const tampered = callback.searchParams.get('state');
  if (options.plant && tampered !== null) {
    // A live transaction with the real verifier under the tampered state: only the state check can refuse it now.
    await plantTransaction(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!, state, tampered);
  }
  const grants = tokenGrants();
  const res = await browser.request(callback);
  expect(res.status).toBe(status);
  expect(JSON.parse(res.body)).toMatchObject({ error });
  expect(tokenGrants()).toBe(grants);
  expect((await browser.request(`${stack.appUrl}/me`)).status).toBe(401);
}

describe('GET /callback', () => {
  test('exchanges the code, rotates the session id, keeps tokens server-side and lands on returnTo', async () => {
    const browser = new Browser();
    const callback = await authorize(browser, '/me?tab=1');
    const before = browser.cookie('127.0.0.1', 'connect.sid')!.value;
    const grants = tokenGrants();

    const res = await browser.request(callback);
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe('/me?tab=1');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(tokenGrants()).toBe(grants + 1);

    const after = browser.cookie('127.0.0.1', 'connect.sid')!;
    expect(after.value).not.toBe(before);
    expect(after.httpOnly).toBe(true);

    const me = await browser.request(`${stack.appUrl}/me`);
    expect(me.status).toBe(200);
    const body = JSON.parse(me.body);
    expect(body.claims).toMatchObject({ sub: 'alice', email: 'alice@example.com', iss: stack.provider.issuer, aud: 'test-app' });

    // Tokens are in Redis under the session, nowhere in what the browser received.
    const id = decodeURIComponent(after.value).slice(2).split('.')[0];
    const stored = JSON.parse((await stack.redis.get(`${stack.sessionPrefix}${id}`))!);
    // The session copy is one packed string (cheap for express-session to hash on every request).
    expect(typeof stored.oauth.login.tokens).toBe('string');
    const { accessToken, refreshToken, idToken: copiedIdToken } = unpackTokens(stored.oauth.login.tokens)!;
    expect(typeof accessToken).toBe('string');
    // The raw ID token is not in the session copy (its claims are); the whole set is in the token store.
    expect(copiedIdToken).toBeUndefined();
    const record = JSON.parse((await stack.redis.get(`${stack.authOptions.keyPrefix}tokens:${stored.oauth.login.id}`))!);
    const idToken: string = record.tokens.idToken;
    expect(idToken.split('.')).toHaveLength(3);
    expect(record.tokens.accessToken).toBe(accessToken);
    expect(stored.oauth.login.tokens).not.toContain(idToken);
    const seen = [...res.steps.map((s) => s.location ?? ''), res.body, me.body, ...browser.setCookies.map((c) => c.header)].join('\n');
    for (const token of [accessToken, idToken, refreshToken].filter(Boolean)) expect(seen).not.toContain(token);
    expect(res.headers.get('location')).not.toContain('code=');
    // The old session is gone: presenting the pre-login cookie gives nothing.
    expect(await stack.redis.get(`${stack.sessionPrefix}${decodeURIComponent(before).slice(2).split('.')[0]}`)).toBeNull();
  });

  test('a replayed callback is refused without calling the token endpoint again', async () => {
    const browser = json(new Browser());
    const callback = await authorize(browser);
    expect((await browser.request(callback)).status).toBe(302);
    const grants = tokenGrants();
    const replay = await browser.request(callback);
    expect(replay.status).toBe(400);
    expect(JSON.parse(replay.body)).toMatchObject({ error: 'invalid_state' });
    expect(tokenGrants()).toBe(grants);
  });

  test('two concurrent callbacks with the same state redeem the code once', async () => {
    const browser = json(new Browser());
    const callback = await authorize(browser);
    const [a, b] = await Promise.all([browser.request(callback), browser.request(callback)]);
    expect([a.status, b.status].sort()).toEqual([302, 400]);
    expect(stack.provider.events.filter((e) => e.name === 'grant.revoked')).toHaveLength(0);
  });

  test.each([
    ['missing', (u: URL) => u.searchParams.delete('state'), false],
    ['unknown', (u: URL) => u.searchParams.set('state', 'A'.repeat(43)), false],
    // Malformed keys are refused by their shape, even when the session holds a transaction under them.
    ['malformed', (u: URL) => u.searchParams.set('state', '../../__proto__'), true],
    ['prototype key', (u: URL) => u.searchParams.set('state', '__proto__'), true],
  ])('%s state → 400 invalid_state, token endpoint never called', async (_name, tamper, plant) => {
    await expectRefusedCallback(tamper, 400, 'invalid_state', { plant });
  });

  test('a state from another browser session is refused', async () => {
    const victim = json(new Browser());
    const callback = await authorize(victim);
    const attacker = json(new Browser());
    const res = await attacker.request(callback);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'invalid_state' });
    expect(attacker.cookie('127.0.0.1', 'connect.sid')).toBeUndefined();
  });

  test('an expired transaction is refused', async () => {
    const browser = json(new Browser());
    const callback = await authorize(browser);
    // Age the transaction in the store, as ten minutes would.
    const id = decodeURIComponent(browser.cookie('127.0.0.1', 'connect.sid')!.value).slice(2).split('.')[0];
    const key = `${stack.sessionPrefix}${id}`;
    const session = JSON.parse((await stack.redis.get(key))!);
    for (const tx of Object.values<any>(session.oauth.tx)) tx.createdAt -= 11 * 60 * 1000;
    await stack.redis.set(key, JSON.stringify(session), 'KEEPTTL');
    const grants = tokenGrants();
    const res = await browser.request(callback);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'invalid_state' });
    expect(tokenGrants()).toBe(grants);
  });

  test('access_denied from the authorization server → 403 with the upstream error kept, no login', async () => {
    const browser = json(new Browser());
    const callback = await authorize(browser);
    const denied = new URL(callback);
    denied.searchParams.delete('code');
    denied.searchParams.set('error', 'access_denied');
    denied.searchParams.set('error_description', 'The user said no');
    const res = await browser.request(denied);
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'access_denied', upstream_error: 'access_denied', upstream_error_description: 'The user said no' });
    expect((await browser.request(`${stack.appUrl}/me`)).status).toBe(401);
  });

  test('other error responses → 400 authorization_error; a browser gets a readable page without a stack trace', async () => {
    const browser = new Browser();
    const callback = await authorize(browser);
    callback.searchParams.delete('code');
    callback.searchParams.set('error', 'interaction_required');
    const res = await browser.request(callback);
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    expect(res.body).toContain('interaction_required');
    expect(res.body).toContain('authorization_error');
    expect(res.body).not.toMatch(/at .*\.(ts|js):\d+/);
  });

  test('an error code with line breaks or of any length is shown short and printable (it reaches pages and log lines)', async () => {
    const browser = json(new Browser());
    const callback = await authorize(browser);
    callback.searchParams.delete('code');
    callback.searchParams.set('error', `server_error\r\nforged log line ${'x'.repeat(1_000)}`);
    const res = await browser.request(callback);
    expect(res.status).toBe(400);
    const message = String((JSON.parse(res.body) as { error_description: unknown }).error_description);
    expect(message).toMatch(/^The authorization server refused the sign-in: server_error\?\?forged log line x+\.$/);
    expect(message.length).toBeLessThan(200);
  });

  test('a wrong or missing iss is refused before the token endpoint (RFC 9207)', async () => {
    await expectRefusedCallback((u) => u.searchParams.set('iss', 'http://evil.example'), 400, 'invalid_response');
    await expectRefusedCallback((u) => u.searchParams.delete('iss'), 400, 'invalid_response');
  });

  test('a missing or tampered code is refused with a clear 4xx and no login', async () => {
    const noCode = json(new Browser());
    const a = await authorize(noCode);
    a.searchParams.delete('code');
    const r1 = await noCode.request(a);
    expect(r1.status).toBe(400);
    expect(JSON.parse(r1.body)).toMatchObject({ error: 'invalid_request' });

    const tampered = json(new Browser());
    const b = await authorize(tampered);
    b.searchParams.set('code', `${b.searchParams.get('code')}x`);
    const r2 = await tampered.request(b);
    expect(r2.status).toBe(400);
    expect(JSON.parse(r2.body)).toMatchObject({ error: 'token_exchange_failed', upstream_error: 'invalid_grant' });
    expect((await tampered.request(`${stack.appUrl}/me`)).status).toBe(401);
  });

  test.each([
    ['repeated code', (u: URL) => u.searchParams.append('code', 'x')],
    ['repeated state', (u: URL) => u.searchParams.append('state', u.searchParams.get('state')!)],
  ])('%s → 400 invalid_request', async (_name, tamper) => {
    await expectRefusedCallback(tamper, 400, 'invalid_request');
  });

  test('an unreachable token endpoint → 502 idp_unreachable; a hanging one → 504 after httpTimeout', async () => {
    const down = await startStack({ auth: { httpTimeout: 800 } });
    try {
      const browser = json(new Browser());
      const cb1 = new URL((await browser.login(`${down.appUrl}/login`, { stopAtCallback: isCallback })).steps.at(-1)!.location!);
      const cb2 = new URL((await browser.login(`${down.appUrl}/login`, { stopAtCallback: isCallback })).steps.at(-1)!.location!);
      // The provider stops answering: connections hang.
      down.provider.server.removeAllListeners('request');
      down.provider.server.on('request', () => undefined);
      const hung = await browser.request(cb1);
      expect(hung.status).toBe(504);
      expect(JSON.parse(hung.body)).toMatchObject({ error: 'idp_unreachable' });
      // Then it is gone: connections are refused.
      await down.provider.close();
      const refused = await browser.request(cb2);
      expect(refused.status).toBe(502);
      expect(JSON.parse(refused.body)).toMatchObject({ error: 'idp_unreachable' });
      expect((await browser.request(`${down.appUrl}/me`)).status).toBe(401);
    } finally {
      await down.close();
    }
  });

  test('unsafe returnTo values land on /', async () => {
    for (const returnTo of ['//evil.example', '/\\evil.example', 'https://evil.example/', 'javascript:alert(1)', '/%2F%2Fevil.example', '/\t/evil.example']) {
      const browser = new Browser();
      const res = await browser.login(`${stack.appUrl}/login?returnTo=${encodeURIComponent(returnTo)}`, { stopAtCallback: isCallback });
      const done = await browser.request(res.steps.at(-1)!.location!);
      expect(done.headers.get('location')).toBe('/');
    }
  });
});

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { mountApp, startStack, type Stack } from '../helpers/app.js';
import { unpackTokens } from '../../lib/tokens.js';
import { Browser, type BrowserResponse } from '../helpers/browser.js';
import { logRevocations, tokenResponses, type RevocationLog } from '../helpers/provider.js';
import { browserSessionId, editSession, plantTransaction, readSession } from '../helpers/security.js';
import { firstOnly, tryRefresh, userinfoStatus, withFailingCommand } from '../logout/support.js';
import { inMode, installTokenStub, type TokenStub } from '../refresh/support.js';

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

  test('the state is marked used in Redis, under its whole value, for as long as a transaction lives (10 minutes)', async () => {
    // The mark is what stops a second process, or a request that loaded the session before this one saved it, from
    // redeeming the code again: it must name this state exactly and outlive any copy of the transaction.
    const browser = json(new Browser());
    const callback = await authorize(browser);
    const state = callback.searchParams.get('state')!;
    expect((await browser.request(callback)).status).toBe(302);
    const ttl = await stack.redis.pttl(`${stack.authOptions.keyPrefix}once:state:${state}`);
    expect(ttl).toBeGreaterThan(9 * 60 * 1000);
    expect(ttl).toBeLessThanOrEqual(10 * 60 * 1000);
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
    // The server's own code, said as such, also without an error_description.
    expect(res.body).toContain('The authorization server said: <code>interaction_required</code></p>');
    expect(res.body).toContain('authorization_error');
    expect(res.body).not.toMatch(/at .*\.(ts|js):\d+/);
  });

  test('an error code with line breaks or of any length is shown short and printable (it reaches pages and log lines)', async () => {
    const browser = json(new Browser());
    const callback = await authorize(browser);
    callback.searchParams.delete('code');
    callback.searchParams.set('error', `server_error\r\nforged log line ${'x'.repeat(1_000)}`);
    callback.searchParams.set('error_description', 'd'.repeat(2_000));
    const res = await browser.request(callback);
    expect(res.status).toBe(400);
    const body = JSON.parse(res.body) as { error_description: unknown; upstream_error_description: unknown };
    const message = String(body.error_description);
    expect(message).toMatch(/^The authorization server refused the sign-in: server_error\?\?forged log line x+\.$/);
    expect(message.length).toBeLessThan(200);
    // The server's description is kept, cut to 500 characters.
    expect(body.upstream_error_description).toBe('d'.repeat(500));
  });

  test('a wrong or missing iss is refused before the token endpoint (RFC 9207)', async () => {
    await expectRefusedCallback((u) => u.searchParams.set('iss', 'http://evil.example'), 400, 'invalid_response');
    await expectRefusedCallback((u) => u.searchParams.delete('iss'), 400, 'invalid_response');
  });

  test.each([
    ['a JWT response (JARM)', (u: URL) => u.searchParams.set('response', 'eyJhbGciOiJub25lIn0.e30.'), /JARM/],
    ['an ID token next to the code (hybrid flow)', (u: URL) => u.searchParams.set('id_token', 'eyJhbGciOiJub25lIn0.e30.'), /ID token \(implicit or hybrid flow\)/],
    // Not shown as the server's refusal either: an answer of the wrong shape says nothing reliable, its error included.
    [
      'a JWT response next to an error',
      (u: URL) => {
        u.searchParams.delete('code');
        u.searchParams.set('error', 'access_denied');
        u.searchParams.set('response', 'eyJhbGciOiJub25lIn0.e30.');
      },
      /JARM/,
    ],
  ])('an authorization response with %s is 400 invalid_response, not taken for an ID-token or token-endpoint failure', async (_name, tamper, message) => {
    await expectRefusedCallback(tamper, 400, 'invalid_response');
    const browser = json(new Browser());
    const callback = await authorize(browser);
    tamper(callback);
    expect(JSON.parse((await browser.request(callback)).body).error_description).toMatch(message);
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

  // fetchUser is app code that calls an API: it needs the access token only, and whatever it is handed may end up in
  // its logs or errors. The refresh token outlives the login's access tokens; the ID token is personal data.
  test('fetchUser is handed the access token, its type, expiry and scope: never the refresh token or the ID token', async () => {
    const handed: unknown[] = [];
    const withHook = mountApp(stack.listener, stack.provider.issuer, {
      auth: {
        fetchUser: async (tokens) => {
          handed.push(tokens);
          return { name: 'Alice' };
        },
      },
    });
    try {
      const landed = await withHook.browser.login(`${withHook.appUrl}/login?returnTo=/me`);
      expect(landed.status).toBe(200);
      const issued = tokenResponses(stack.provider).at(-1) as { access_token: string; refresh_token?: string; id_token?: string };
      // The premise: the server did issue both.
      expect([typeof issued.refresh_token, typeof issued.id_token]).toEqual(['string', 'string']);

      expect(handed).toHaveLength(1);
      expect(Object.keys(handed[0] as object).sort()).toEqual(['accessToken', 'expiresAt', 'scope', 'tokenType']);
      expect(handed[0]).toMatchObject({ accessToken: issued.access_token, tokenType: 'Bearer' });
    } finally {
      stack.listener.handle(stack.app);
      withHook.redis.disconnect();
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

/**
 * Once the code is exchanged the server holds a grant for these tokens; a callback that then fails must not leave it
 * alive with nobody holding it (RFC 7009). Checked at the provider: the refresh token is refused, the access token too.
 */
describe('a callback that fails after the code exchange revokes the tokens it got', () => {
  let failing: Stack;
  let stub: TokenStub;
  let revocations: RevocationLog;
  let user: () => Promise<object> = async () => ({ name: 'Alice' });

  beforeAll(async () => {
    // httpTimeout far above what a callback takes: an answer that waited for a held revocation would show.
    failing = await startStack({ auth: { fetchUser: () => user(), httpTimeout: 10_000, onError: () => undefined } });
    stub = installTokenStub(failing.provider);
    revocations = logRevocations(failing.provider);
  });
  afterAll(async () => failing.close());

  /** Runs a login and its callback: the answer, how long it took, and the token response the provider sent for the code. */
  /** A login whose callback fails; `during` runs the callback request (to fail a Redis command meanwhile, say). */
  async function failedCallback(during: (callback: () => Promise<BrowserResponse>) => Promise<BrowserResponse> = (callback) => callback()) {
    const browser = json(new Browser());
    const pending = await browser.login(`${failing.appUrl}/login?returnTo=/me`, { stopAtCallback: isCallback });
    const exchanges = tokenResponses(failing.provider).length;
    const started = Date.now();
    const res = await during(() => browser.request(pending.steps.at(-1)!.location!));
    const elapsed = Date.now() - started;
    const issued = tokenResponses(failing.provider).slice(exchanges);
    expect((await browser.request(`${failing.appUrl}/me`)).status).toBe(401);
    return { res, elapsed, issued };
  }

  async function expectRevoked(issued: Array<{ access_token: string; refresh_token?: string }>, revokedBefore: number): Promise<void> {
    expect(issued).toHaveLength(1);
    const [tokens] = issued;
    expect(tokens!.refresh_token).toEqual(expect.any(String));
    await revocations.answeredAtLeast(revokedBefore + 2);
    expect(await tryRefresh(failing.provider.issuer, tokens!.refresh_token!)).toEqual({ status: 400, error: 'invalid_grant' });
    expect(await userinfoStatus(failing.provider.issuer, tokens!.access_token)).toBe(401);
  }

  test('control: a callback that succeeds revokes nothing', async () => {
    const before = revocations.answered;
    const browser = new Browser();
    const landed = await browser.login(`${failing.appUrl}/login?returnTo=/me`);
    expect(landed.status).toBe(200);
    const [tokens] = tokenResponses(failing.provider).slice(-1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(revocations.answered).toBe(before);
    expect(await userinfoStatus(failing.provider.issuer, tokens!.access_token)).toBe(200);
  });

  test('fetchUser fails: 502 user_fetch_failed, and the access and refresh tokens are revoked', async () => {
    user = () => Promise.reject(new Error('user API down'));
    const before = revocations.answered;
    try {
      const { res, issued } = await failedCallback();
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'user_fetch_failed' });
      await expectRevoked(issued, before);
    } finally {
      user = async () => ({ name: 'Alice' });
    }
  });

  test('fetchUser fails: the session keeps its id and its other pending logins', async () => {
    const browser = json(new Browser());
    const first = await browser.login(`${failing.appUrl}/login?returnTo=/first`, { stopAtCallback: isCallback });
    const second = new URL((await browser.login(`${failing.appUrl}/login?returnTo=/second`, { stopAtCallback: isCallback })).steps.at(-1)!.location!);
    const sid = browserSessionId(browser, failing.appUrl)!;
    user = () => Promise.reject(new Error('user API down'));
    try {
      const res = await browser.request(first.steps.at(-1)!.location!);
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'user_fetch_failed' });
    } finally {
      user = async () => ({ name: 'Alice' });
    }
    // The hook runs before the session id rotates: nothing of the session changed but the spent transaction. (The
    // other tab's code cannot be redeemed here: revoking the first tokens ends the provider's grant, which both share.)
    expect(browserSessionId(browser, failing.appUrl)).toBe(sid);
    const session = await readSession(failing.redis, failing.sessionPrefix, sid);
    expect(Object.keys(session?.oauth?.tx ?? {})).toEqual([second.searchParams.get('state')]);
    expect(session?.oauth?.tx?.[second.searchParams.get('state')!]).toMatchObject({ returnTo: '/second' });
  });

  test('an ID token whose signature does not verify: 400 invalid_id_token, and the tokens are revoked', async () => {
    const before = revocations.answered;
    const { res, issued } = await inMode(stub, 'foreignKey', failedCallback);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'invalid_id_token' });
    await expectRevoked(issued, before);
  });

  test("the issuer's keys cannot be fetched to check the ID token: 502 idp_unreachable, and the tokens are revoked", async () => {
    // Another app instance on the same listener, whose key cache is empty: the check has to fetch the keys.
    const fresh = mountApp(failing.listener, failing.provider.issuer, { auth: { httpTimeout: 10_000, onError: () => undefined } });
    stub.keysDown = true;
    const before = revocations.answered;
    try {
      const { res, issued } = await failedCallback();
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'idp_unreachable' });
      stub.keysDown = false;
      await expectRevoked(issued, before);
    } finally {
      stub.keysDown = false;
      failing.listener.handle(failing.app);
      fresh.redis.disconnect();
    }
  });

  test('a failing revocation endpoint changes nothing: the same 502 user_fetch_failed', async () => {
    user = () => Promise.reject(new Error('user API down'));
    stub.revocation = 'fail';
    const before = revocations.answered;
    try {
      const { res } = await failedCallback();
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toEqual({
        error: 'user_fetch_failed',
        error_description: 'fetchUser failed, so the login was not completed; try again.',
        status: 502,
      });
      // It was tried, and refused.
      await revocations.answeredAtLeast(before + 2);
    } finally {
      user = async () => ({ name: 'Alice' });
      stub.revocation = 'pass';
    }
  });

  test('the answer does not wait for the revocation: it comes while the revocation endpoint holds the requests', async () => {
    user = () => Promise.reject(new Error('user API down'));
    stub.revocation = 'hold';
    const before = revocations.answered;
    try {
      const { res, elapsed, issued } = await failedCallback();
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'user_fetch_failed' });
      // A callback that waited would have answered only when its revocation requests timed out (httpTimeout, 10 s).
      expect(elapsed).toBeLessThan(5000);
      expect(revocations.answered).toBe(before);
      stub.revocation = 'pass';
      stub.releaseRevocations();
      await expectRevoked(issued, before);
    } finally {
      user = async () => ({ name: 'Alice' });
      stub.revocation = 'pass';
      stub.releaseRevocations();
    }
  });

  /** Whether the token store still holds a live login with this access token (an ended one holds no tokens). */
  async function liveLoginWith(accessToken: string): Promise<boolean> {
    const keys = await failing.redis.keys(`${failing.authOptions.keyPrefix}tokens:*`);
    const entries = await Promise.all(keys.map(async (key) => JSON.parse((await failing.redis.get(key)) ?? 'null') as { tokens?: { accessToken?: string } } | null));
    return entries.some((entry) => entry?.tokens?.accessToken === accessToken);
  }

  test('Redis fails to index the login for back-channel logout: 503, the tokens are revoked and no login is left', async () => {
    const redis = failing.redis as unknown as { multi: (...args: unknown[]) => { sadd: (...a: unknown[]) => unknown; exec: () => Promise<unknown> } };
    const multi = redis.multi.bind(redis);
    let failures = 0;
    redis.multi = (...args: unknown[]) => {
      const transaction = multi(...args);
      const { sadd, exec } = { sadd: transaction.sadd.bind(transaction), exec: transaction.exec.bind(transaction) };
      let indexKey = false;
      transaction.sadd = (...a: unknown[]) => {
        indexKey ||= String(a[0]).includes('logout:');
        return sadd(...a);
      };
      transaction.exec = async () => {
        if (indexKey && failures++ === 0) throw new Error('Connection is closed.');
        return exec();
      };
      return transaction;
    };
    const before = revocations.answered;
    try {
      const { res, issued } = await failedCallback();
      expect(res.status).toBe(503);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'session_unavailable' });
      await expectRevoked(issued, before);
      expect(await liveLoginWith(issued[0]!.access_token)).toBe(false);
    } finally {
      redis.multi = multi;
    }
    expect(failures).toBeGreaterThan(0);
  });

  test.each([
    ['Redis fails to store the login', 'set', 'tokens:'],
    ['Redis fails to save the session', 'set', ':sess:'],
    ['Redis cannot say whether a back-channel logout came during the login', 'exists', 'logout:ended:'],
  ] as const)('%s: 503, the tokens are revoked and no login is left', async (_case, command, keyPart) => {
    const before = revocations.answered;
    let failures = 0;
    const { res, issued } = await failedCallback(async (callback) => {
      const failed = await withFailingCommand(failing.redis, command, callback, firstOnly((args) => String(args[0]).includes(keyPart)));
      failures = failed.failures;
      return failed.result;
    });
    expect(failures).toBe(1);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'session_unavailable' });
    await expectRevoked(issued, before);
    expect(await liveLoginWith(issued[0]!.access_token)).toBe(false);
  });

  test('an ID token refused inside the exchange (a wrong nonce): 400 invalid_id_token, and the tokens it came with are revoked', async () => {
    stub.reclaim = (claims) => ({ ...claims, nonce: 'not-the-nonce' });
    const before = revocations.answered;
    try {
      const { res, issued } = await inMode(stub, 'reclaim', failedCallback);
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'invalid_id_token' });
      await expectRevoked(issued, before);
    } finally {
      stub.reclaim = (claims) => claims;
    }
  });

  test('an answer with a refresh token but no access token: 400 token_exchange_failed, and that refresh token is revoked', async () => {
    const before = revocations.answered;
    const { res, issued } = await inMode(stub, 'dropAccessToken', failedCallback);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'token_exchange_failed' });
    expect(issued).toHaveLength(1);
    await revocations.answeredAtLeast(before + 1);
    expect(await tryRefresh(failing.provider.issuer, issued[0]!.refresh_token!)).toEqual({ status: 400, error: 'invalid_grant' });
  });

  test('an exchange that failed revokes nothing: there are no tokens', async () => {
    const before = revocations.answered;
    const { res, issued } = await inMode(stub, 'fail500', failedCallback);
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'idp_unreachable' });
    expect(issued).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(revocations.answered).toBe(before);
  });
});

describe('signing in again over a login', () => {
  const tokenRecord = async (loginId: string) => JSON.parse((await stack.redis.get(`${stack.authOptions.keyPrefix ?? ''}tokens:${loginId}`)) ?? 'null');
  const loginOf = async (browser: Browser) => {
    const raw = await stack.redis.get(`${stack.sessionPrefix}${browserSessionId(browser, stack.appUrl)!}`);
    return (JSON.parse(raw!) as { oauth: { login: { id: string; tokens: string; claims: { sub: string } } } }).oauth.login;
  };
  /** Signs `browser` in again as `user`, with a new login at the provider (its own session there forgotten). */
  const signInAgain = async (browser: Browser, user: string) => {
    browser.jar.delete(new URL(stack.provider.issuer).hostname);
    expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: user })).status).toBe(200);
  };
  const eventually = async (check: () => Promise<boolean>) => {
    for (let i = 0; i < 50 && !(await check()); i++) await new Promise((resolve) => setTimeout(resolve, 20));
    return check();
  };

  test("as another user: the old login ends in the token store and its tokens are revoked; the new one works", async () => {
    const browser = new Browser();
    await signInAgain(browser, 'olga');
    const before = await loginOf(browser);
    const oldToken = unpackTokens(before.tokens)!.accessToken;
    expect(await userinfoStatus(stack.provider.issuer, oldToken)).toBe(200);

    await signInAgain(browser, 'pavel');

    const after = await loginOf(browser);
    expect(after.claims.sub).toBe('pavel');
    expect(await tokenRecord(before.id)).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
    expect(await eventually(async () => (await userinfoStatus(stack.provider.issuer, oldToken)) === 401)).toBe(true);
    expect(await userinfoStatus(stack.provider.issuer, unpackTokens(after.tokens)!.accessToken)).toBe(200);
  });

  test('as another user over a login refreshed since its session was saved: the token store\'s newer tokens are revoked', async () => {
    const browser = new Browser();
    await signInAgain(browser, 'vera');
    const before = await loginOf(browser);
    // Another process refreshed the login and its session save was lost: the store holds version 2, with other tokens
    // (here those of a second login), while the session still holds version 1.
    const other = new Browser();
    await signInAgain(other, 'vera');
    const newer = JSON.parse((await stack.redis.get(`${stack.authOptions.keyPrefix}tokens:${(await loginOf(other)).id}`))!) as { v: number };
    await stack.redis.set(`${stack.authOptions.keyPrefix}tokens:${before.id}`, JSON.stringify({ ...newer, v: 2 }), 'KEEPTTL');
    const newerToken = unpackTokens((await loginOf(other)).tokens)!.accessToken;
    expect(await userinfoStatus(stack.provider.issuer, newerToken)).toBe(200);

    await signInAgain(browser, 'walt');

    expect(await eventually(async () => (await userinfoStatus(stack.provider.issuer, newerToken)) === 401)).toBe(true);
  });

  test("as another user while Redis fails to end the old login: its tokens are revoked all the same; the new one works", async () => {
    const browser = new Browser();
    await signInAgain(browser, 'rosa');
    const before = await loginOf(browser);
    const oldToken = unpackTokens(before.tokens)!.accessToken;
    expect(await userinfoStatus(stack.provider.issuer, oldToken)).toBe(200);
    // The tombstone's write (a script on the old login's token key) fails once.
    const { failures } = await withFailingCommand(
      stack.redis,
      'eval',
      () => signInAgain(browser, 'sven'),
      firstOnly((args) => String(args[2]).endsWith(`tokens:${before.id}`)),
    );

    expect(failures).toBe(1);
    const after = await loginOf(browser);
    expect(after.claims.sub).toBe('sven');
    expect(await eventually(async () => (await userinfoStatus(stack.provider.issuer, oldToken)) === 401)).toBe(true);
    expect(await userinfoStatus(stack.provider.issuer, unpackTokens(after.tokens)!.accessToken)).toBe(200);
  });

  test('over a login whose user is unknown (no ID-token claims, as with plain OAuth): its tokens are left alone', async () => {
    // Whether the new login is another user's cannot be told, and the two may share a grant at the server.
    const browser = new Browser();
    await signInAgain(browser, 'tara');
    const before = await loginOf(browser);
    await editSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!, (session) => {
      delete (session.oauth!.login as { claims?: unknown }).claims;
    });
    const revoked = stack.provider.count('grant.revoked');

    await signInAgain(browser, 'ugo');

    expect((await loginOf(browser)).claims.sub).toBe('ugo');
    expect(await tokenRecord(before.id)).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(stack.provider.count('grant.revoked')).toBe(revoked);
    expect(await userinfoStatus(stack.provider.issuer, unpackTokens(before.tokens)!.accessToken)).toBe(200);
  });

  test('as the same user: the old login ends in the token store, its tokens are left alone (the server may share the grant)', async () => {
    const browser = new Browser();
    await signInAgain(browser, 'quinn');
    const before = await loginOf(browser);
    const revoked = stack.provider.count('grant.revoked');

    await signInAgain(browser, 'quinn');

    const after = await loginOf(browser);
    expect(after.id).not.toBe(before.id);
    expect(await tokenRecord(before.id)).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(stack.provider.count('grant.revoked')).toBe(revoked);
    expect(await userinfoStatus(stack.provider.issuer, unpackTokens(after.tokens)!.accessToken)).toBe(200);
  });
});

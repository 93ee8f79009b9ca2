import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { NextFunction, Request, Response } from 'express';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { firstOnly, withFailingCommand } from '../logout/support.js';

let stack: Stack;
/** What the app's `onError` saw of each error: its code, and the library's session state at that moment. */
const reported: Array<{ code: string; oauth: unknown }> = [];
beforeAll(async () => {
  stack = await startStack({
    auth: { onError: (err, req) => void reported.push({ code: err.code, oauth: structuredClone((req.session as { oauth?: unknown } | undefined)?.oauth) }) },
  });
});
afterAll(async () => stack.close());

async function sessionOfStack(of: Stack, browser: Browser): Promise<Record<string, any> | undefined> {
  const cookie = browser.cookie('127.0.0.1', 'connect.sid')?.value;
  if (!cookie) return undefined;
  const id = decodeURIComponent(cookie).slice(2).split('.')[0];
  const raw = await of.redis.get(`${of.sessionPrefix}${id}`);
  return raw ? JSON.parse(raw) : undefined;
}

const sessionOf = (browser: Browser) => sessionOfStack(stack, browser);

describe('GET /login', () => {
  test('redirects to the authorization endpoint with PKCE S256, state, nonce and the exact redirect_uri', async () => {
    const browser = new Browser();
    const res = await browser.request(`${stack.appUrl}/login?returnTo=/me`);
    expect(res.status).toBe(302);
    const target = new URL(res.headers.get('location')!);
    expect(`${target.origin}${target.pathname}`).toBe(`${stack.provider.issuer}/auth`);
    const p = target.searchParams;
    expect(p.get('response_type')).toBe('code');
    expect(p.get('client_id')).toBe('test-app');
    expect(p.get('redirect_uri')).toBe(`${stack.appUrl}/callback`);
    expect(p.get('scope')).toBe('openid email');
    expect(p.get('code_challenge_method')).toBe('S256');
    // 32 random bytes, base64url: 256 bits of state and nonce.
    expect(p.get('state')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(p.get('nonce')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(res.headers.get('cache-control')).toBe('no-store');

    // The transaction is in Redis before the browser is redirected, and its verifier hashes to the challenge.
    const session = await sessionOf(browser);
    const tx = session?.oauth?.tx?.[p.get('state')!];
    expect(tx).toMatchObject({ returnTo: '/me', nonce: p.get('nonce') });
    const challenge = createHash('sha256').update(tx.verifier).digest('base64url');
    expect(p.get('code_challenge')).toBe(challenge);
    expect(JSON.stringify(session)).not.toContain('"plain"');
  });

  test('each login gets a fresh state, verifier and nonce', async () => {
    const browser = new Browser();
    const a = new URL((await browser.request(`${stack.appUrl}/login`)).headers.get('location')!).searchParams;
    const b = new URL((await browser.request(`${stack.appUrl}/login`)).headers.get('location')!).searchParams;
    expect(a.get('state')).not.toBe(b.get('state'));
    expect(a.get('nonce')).not.toBe(b.get('nonce'));
    expect(a.get('code_challenge')).not.toBe(b.get('code_challenge'));
  });

  test('keeps at most 10 pending transactions per session, dropping the oldest', async () => {
    const browser = new Browser();
    const states: string[] = [];
    for (let i = 0; i < 12; i++) {
      const res = await browser.request(`${stack.appUrl}/login?returnTo=/n${i}`);
      states.push(new URL(res.headers.get('location')!).searchParams.get('state')!);
    }
    const tx = (await sessionOf(browser))?.oauth?.tx ?? {};
    expect(Object.keys(tx).sort()).toEqual(states.slice(2).sort());
  });

  test('several tabs can log in at once and each lands where it started', async () => {
    const browser = new Browser();
    const isCallback = (u: URL) => u.pathname === '/callback';
    const tab1 = await browser.login(`${stack.appUrl}/login?returnTo=/tab1`, { stopAtCallback: isCallback });
    const tab2 = await browser.login(`${stack.appUrl}/login?returnTo=/tab2`, { stopAtCallback: isCallback });
    const cb1 = tab1.steps.at(-1)!.location!;
    const cb2 = tab2.steps.at(-1)!.location!;
    const second = await browser.request(cb2);
    expect(second.status).toBe(302);
    expect(second.headers.get('location')).toBe('/tab2');
    // The first tab's transaction survived the session-id rotation of the second tab's login.
    const first = await browser.request(cb1);
    expect(first.status).toBe(302);
    expect(first.headers.get('location')).toBe('/tab1');
  });

  test('an unreachable authorization server gives 502 and leaves no session behind', async () => {
    const { startStack: start } = await import('../helpers/app.js');
    const down = await start();
    await down.provider.close();
    try {
      const res = await down.browser.request(`${down.appUrl}/login`, { headers: { accept: 'application/json' } });
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'idp_unreachable' });
      expect(res.body).not.toMatch(/at .*\.(ts|js):\d+/);
      expect(await down.redis.keys(`${down.sessionPrefix}*`)).toEqual([]);
      expect(down.browser.cookie('127.0.0.1', 'connect.sid')).toBeUndefined();
    } finally {
      await down.close();
    }
  });

  test.each([
    ['repeated returnTo', '?returnTo=/a&returnTo=/b'],
    ['invalid percent-encoding', '?returnTo=%E0%A4%A'],
    ['an oversized query', `?returnTo=/${'a'.repeat(5000)}`],
  ])('refuses %s with 400 invalid_request and no session', async (_name, query) => {
    const browser = new Browser();
    browser.headers = { accept: 'application/json' };
    const res = await browser.request(`${stack.appUrl}/login${query}`);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'invalid_request' });
    expect(browser.cookie('127.0.0.1', 'connect.sid')).toBeUndefined();
  });

  /** `GET /login` (as an API client) while the session write it makes fails, once; asserts that it did fail. */
  async function loginWhileSessionWriteFails(browser: Browser, returnTo: string) {
    const { result, failures } = await withFailingCommand(
      stack.redis,
      'set',
      () => browser.request(`${stack.appUrl}/login?returnTo=${returnTo}`, { headers: { accept: 'application/json' } }),
      firstOnly((args) => String(args[0]).startsWith(stack.sessionPrefix)),
    );
    expect(failures).toBe(1);
    return result;
  }

  test.each([
    ['a signed-in session without a pending login', async (browser: Browser) => void (await browser.login(`${stack.appUrl}/login?returnTo=/me`))],
    ['a session with a pending login', async (browser: Browser) => void (await browser.request(`${stack.appUrl}/login?returnTo=/first`))],
  ])('a login whose session cannot be saved leaves %s as it was', async (_name, prepare) => {
    const browser = new Browser();
    await prepare(browser);
    const before = await sessionOf(browser);
    expect(before?.oauth).toBeDefined();

    const res = await loginWhileSessionWriteFails(browser, '/second');
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'session_unavailable' });
    expect(res.headers.get('location')).toBeNull();
    expect((await sessionOf(browser))?.oauth).toEqual(before?.oauth);
    // Nor does the app's error handling find, in the request's session, a login whose authorization request was never sent.
    expect(reported.at(-1)).toEqual({ code: 'session_unavailable', oauth: before?.oauth });
  });

  test('a first login whose session cannot be saved sets no cookie: it would name a session that was never stored', async () => {
    const browser = new Browser();
    const res = await loginWhileSessionWriteFails(browser, '/me');
    expect(res.status).toBe(503);
    expect(res.headers.getSetCookie()).toEqual([]);
    expect(browser.cookie('127.0.0.1', 'connect.sid')).toBeUndefined();
    expect(reported.at(-1)).toEqual({ code: 'session_unavailable', oauth: undefined });
  });

  test('sessions hold no tokens before login completes', async () => {
    const browser = new Browser();
    const started = await browser.request(`${stack.appUrl}/login?returnTo=/me`);
    expect(started.status).toBe(302);
    const params = new URL(started.headers.get('location')!).searchParams;
    const state = params.get('state')!;

    const session = await sessionOf(browser);
    expect(session).toBeDefined();
    // Only the pending transaction: no login (no tokens, no claims) before the callback.
    expect(session!.oauth?.login).toBeUndefined();
    expect(Object.keys(session!.oauth ?? {})).toEqual(['tx']);
    expect(Object.keys(session!.oauth.tx)).toEqual([state]);
    const tx = session!.oauth.tx[state];
    // Exactly what lib/transaction.ts stores for this configuration (openid, no max_age, no DPoP).
    expect(Object.keys(tx).sort()).toEqual(['createdAt', 'nonce', 'returnTo', 'verifier']);
    expect(tx).toEqual({ verifier: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), nonce: params.get('nonce'), returnTo: '/me', createdAt: expect.any(Number) });
    expect(createHash('sha256').update(tx.verifier).digest('base64url')).toBe(params.get('code_challenge'));
    // Nothing in the whole session is a token copy.
    expect(JSON.stringify(session)).not.toMatch(/accessToken|refreshToken|idToken|"t1\|/);

    // And the app does not consider this browser logged in.
    const me = await browser.request(`${stack.appUrl}/me`, { headers: { accept: 'application/json' } });
    expect(me.status).toBe(401);
  });
});

describe('loginParams: authorization parameters for one login', () => {
  let custom: Stack;
  beforeAll(async () => {
    custom = await startStack({
      auth: {
        authorizationParams: { prompt: 'login', ui_locales: 'en' },
        loginParams: async (req) => {
          switch (req.query.kind) {
            case 'switch':
              return { prompt: 'select_account', login_hint: 'alice@example.com' };
            case 'step-up':
              return { max_age: '0' };
            case 'state':
              return { state: 'chosen-by-the-app' };
            case 'number':
              return { max_age: 0 } as unknown as Record<string, string>;
            case 'bigint':
              return { max_age: 60n } as unknown as Record<string, string>;
            case 'throws':
              throw new Error('the app could not decide');
            default:
              return undefined;
          }
        },
      },
      routes: (app) => {
        app.use((err: Error, _req: Request, res: Response, _next: NextFunction) => void res.status(599).json({ reachedApp: err.message }));
      },
    });
  });
  afterAll(async () => custom.close());

  const sent = async (browser: Browser, query: string) => {
    const res = await browser.request(`${custom.appUrl}/login${query}`);
    expect(res.status).toBe(302);
    return new URL(res.headers.get('location')!).searchParams;
  };

  test('what it returns goes over authorizationParams for that login only; undefined leaves them as they are', async () => {
    const browser = new Browser();
    const switched = await sent(browser, '?kind=switch&returnTo=/me');
    expect(switched.get('prompt')).toBe('select_account');
    expect(switched.get('login_hint')).toBe('alice@example.com');
    expect(switched.get('ui_locales')).toBe('en');
    expect(switched.get('code_challenge_method')).toBe('S256');

    const plain = await sent(browser, '?returnTo=/me');
    expect(plain.get('prompt')).toBe('login');
    expect(plain.has('login_hint')).toBe(false);
  });

  test('a max_age it returns is recorded with the transaction and the login goes through with a fresh auth_time', async () => {
    const browser = new Browser();
    const params = await sent(browser, '?kind=step-up');
    expect(params.get('max_age')).toBe('0');
    const tx = (await sessionOfStack(custom, browser))?.oauth?.tx?.[params.get('state')!];
    expect(tx).toMatchObject({ maxAge: 0 });

    const landed = await browser.login(`${custom.appUrl}/login?kind=step-up&returnTo=/me`);
    expect(landed.status).toBe(200);
    const claims = (JSON.parse(landed.body) as { claims: { auth_time?: number } }).claims;
    expect(Math.abs(Number(claims.auth_time) - Date.now() / 1000)).toBeLessThan(30);
  });

  test.each([
    ['a parameter the library sets', 'state', /`loginParams\(req\)\.state` is set by the library itself/],
    ['a max_age that is not a string', 'number', /`loginParams\(req\)\.max_age` must be a whole number of seconds written as a string/],
    // JSON cannot write a BigInt: the message must not throw while it names the value.
    ['a max_age that is a BigInt', 'bigint', /`loginParams\(req\)\.max_age` must be a whole number of seconds written as a string, .*got 60n/],
  ])('%s is 500 misconfigured, before anything is stored or sent', async (_name, kind, message) => {
    const browser = new Browser();
    browser.headers = { accept: 'application/json' };
    const res = await browser.request(`${custom.appUrl}/login?kind=${kind}`);
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'misconfigured', error_description: expect.stringMatching(message) });
    expect(res.headers.get('location')).toBeNull();
    expect(browser.cookie('127.0.0.1', 'connect.sid')).toBeUndefined();
  });

  test('a max_age it returns without openid in the scope is 500 misconfigured: there is no ID token to check it against', async () => {
    const plain = await startStack({ auth: { scope: 'profile', loginParams: async () => ({ max_age: '0' }) } });
    try {
      const browser = new Browser();
      browser.headers = { accept: 'application/json' };
      const res = await browser.request(`${plain.appUrl}/login`);
      expect(res.status).toBe(500);
      expect(JSON.parse(res.body)).toMatchObject({ error: 'misconfigured', error_description: expect.stringMatching(/`loginParams\(req\)\.max_age` .*without 'openid'/) });
      expect(res.headers.get('location')).toBeNull();
    } finally {
      await plain.close();
    }
  });

  test("an error it throws is the app's: it reaches the app's error handler, and nothing is stored", async () => {
    const browser = new Browser();
    const res = await browser.request(`${custom.appUrl}/login?kind=throws`);
    expect(res.status).toBe(599);
    expect(JSON.parse(res.body)).toEqual({ reachedApp: 'the app could not decide' });
    expect(browser.cookie('127.0.0.1', 'connect.sid')).toBeUndefined();
  });
});

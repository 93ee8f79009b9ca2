import { createServer, request as httpRequest, type ClientRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { RedisStore } from 'connect-redis';
import express from 'express';
import session from 'express-session';
import { exportJWK, generateKeyPair, type JWTPayload } from 'jose';
import supertest from 'supertest';
import { auth } from '../../lib/index.js';
import { buildApp, CLIENT_ID, CLIENT_SECRET, SESSION_SECRET, startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import {
  BCL_EVENT,
  duringTokenWrite,
  logoutClaims,
  logoutProviderConfiguration,
  me,
  sendLogoutToken,
  signLogoutToken,
  unsignedToken,
} from './support.js';

let stack: Stack;
let otherKey: Awaited<ReturnType<typeof exportJWK>>;
let user = 0;

beforeAll(async () => {
  stack = await startStack({ provider: { configuration: logoutProviderConfiguration } });
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  otherKey = await exportJWK(privateKey);
});
afterAll(async () => stack.close());

/** A fresh user, logged in, so that each case shows its own session surviving. */
async function loggedInUser(): Promise<{ sub: string; browser: Browser }> {
  const sub = `user${++user}`;
  const browser = new Browser();
  await browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: sub });
  expect((await me(browser, stack.appUrl)).status).toBe(200);
  return { sub, browser };
}

const now = () => Math.floor(Date.now() / 1000);

/** `login`, with `during` run while its callback stores the tokens, before the back-channel index holds the login. */
const duringLogin = <T>(login: () => Promise<T>, during: () => Promise<void>) =>
  duringTokenWrite(stack.redis, String(stack.authOptions.keyPrefix), login, during);
const without = (claims: JWTPayload, name: string): JWTPayload => Object.fromEntries(Object.entries(claims).filter(([k]) => k !== name));

/** Name, token builder, and the reason the refusal must give (so a case cannot pass by failing another check). */
type Case = [string, (sub: string) => Promise<string>, RegExp];

const refusals: Case[] = [
  ['a wrong aud', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), aud: 'another-client' }), /"aud"/],
  // OIDC Core §3.1.3.7 (3)-(5), which §2.6 applies to logout tokens: an audience the client does not trust is refused
  // unless the token was issued to this client (azp).
  [
    'an extra, untrusted aud and no azp',
    (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), aud: [CLIENT_ID, 'another-client'] }),
    /"aud".*untrusted audiences.*"azp"/,
  ],
  [
    'an extra aud and an azp naming another client',
    (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), aud: [CLIENT_ID, 'another-client'], azp: 'another-client' }),
    /"azp"/,
  ],
  ['a wrong iss', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), iss: 'http://localhost:1' }), /"iss"/],
  ['no events claim', (sub) => signLogoutToken(stack.provider, without(logoutClaims(stack.provider.issuer, { sub }), 'events')), /"events"/],
  [
    'events without the back-channel logout member',
    (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), events: { 'https://example.com/other-event': {} } }),
    /"events"/,
  ],
  ['a nonce', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), nonce: 'n-0S6_WzA2Mj' }), /"nonce"/],
  ['a bad signature (another key, same kid)', (sub) => signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }), { key: otherKey }), /signature verification failed/],
  ['an unknown kid', (sub) => signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }), { key: otherKey, kid: 'unknown-key' }), /no applicable key/],
  ['alg none', async (sub) => unsignedToken(logoutClaims(stack.provider.issuer, { sub })), /"alg"/],
  [
    'alg HS256 keyed with the client secret',
    (sub) => signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }), { alg: 'HS256', key: new TextEncoder().encode(CLIENT_SECRET) }),
    /"alg"/,
  ],
  ['an expired exp', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), iat: now() - 300, exp: now() - 120 }), /"exp"/],
  ['an iat in the future', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), iat: now() + 600, exp: now() + 720 }), /"iat".*in the past/],
  ['an iat too long ago', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), iat: now() - 3600, exp: now() + 60 }), /"iat".*too far in the past/],
  ['no exp', (sub) => signLogoutToken(stack.provider, without(logoutClaims(stack.provider.issuer, { sub }), 'exp')), /missing required "exp"/],
  ['no jti', (sub) => signLogoutToken(stack.provider, without(logoutClaims(stack.provider.issuer, { sub }), 'jti')), /missing required "jti"/],
  ['neither sub nor sid', () => signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, {})), /"sub", "sid"/],
  [
    'an events member that is not an object',
    (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), events: { [BCL_EVENT]: 'yes' } }),
    /"events"/,
  ],
  ['an events member that is an array', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), events: { [BCL_EVENT]: [] } }), /"events"/],
  ['an empty jti', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), jti: '' }), /"jti" must be a non-empty string/],
  // Issued more than 10 minutes ago, though its exp is still ahead.
  ['an iat 15 minutes ago', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), iat: now() - 900, exp: now() + 60 }), /"iat".*too far in the past/],
  ['an empty sub', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), sub: '' }), /"sub" must be a non-empty string/],
  ['a sid that is not a string', (sub) => signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), sid: 42 }), /"sid" must be a non-empty string/],
  ['a typ of another kind of JWT', (sub) => signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }), { typ: 'at+jwt' }), /"typ"/],
  ['garbage instead of a JWT', async () => 'not.a.jwt', /JWS/],
];

describe('logout-token refusals (Back-Channel Logout 1.0 §2.6)', () => {
  test.each(refusals)('a token with %s is refused with 400 and ends nothing', async (_name, build, reason) => {
    const { sub, browser } = await loggedInUser();
    const token = await build(sub);

    const response = await sendLogoutToken(stack.appUrl, token);

    expect(response.status).toBe(400);
    expect(response.headers.get('cache-control')).toBe('no-store');
    const body = (await response.json()) as { error: string; error_description: string };
    expect(body.error).toBe('invalid_logout_token');
    expect(body.error_description).toMatch(reason);
    expect(body.error_description).not.toContain(token);
    expect((await me(browser, stack.appUrl)).status).toBe(200);
  });

  test('a replayed jti is refused: the second delivery ends nothing', async () => {
    const { sub, browser } = await loggedInUser();
    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }));
    expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
    expect((await me(browser, stack.appUrl)).status).toBe(401);

    const again = new Browser();
    await again.login(`${stack.appUrl}/login?returnTo=/me`, { login: sub });
    const replayed = await sendLogoutToken(stack.appUrl, token);

    expect(replayed.status).toBe(400);
    expect(await replayed.json()).toMatchObject({ error: 'invalid_logout_token', error_description: expect.stringContaining('jti') });
    expect((await me(again, stack.appUrl)).status).toBe(200);
  });

  test("a jti is another issuer's to reuse: an app of another server, on the same Redis and key prefix, still accepts it", async () => {
    // jti values are unique per issuer only (Back-Channel Logout 1.0 §2.4); the default keyPrefix is the same for every app.
    const other = await startStack({ provider: { configuration: logoutProviderConfiguration }, auth: { keyPrefix: stack.authOptions.keyPrefix } });
    try {
      const { sub } = await loggedInUser();
      const browser = new Browser();
      const otherSub = `${sub}-there`;
      await browser.login(`${other.appUrl}/login?returnTo=/me`, { login: otherSub });
      expect((await me(browser, other.appUrl)).status).toBe(200);
      const jti = `shared-${sub}`;
      const here = await signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), jti });
      expect((await sendLogoutToken(stack.appUrl, here)).status).toBe(200);

      const there = await signLogoutToken(other.provider, { ...logoutClaims(other.provider.issuer, { sub: otherSub }), jti });
      const response = await sendLogoutToken(other.appUrl, there);

      expect(response.status).toBe(200);
      expect((await me(browser, other.appUrl)).status).toBe(401);
    } finally {
      await other.close();
    }
  });

  test("a logout by one server neither ends nor un-indexes the sessions of another server's user with the same sub (same Redis and key prefix)", async () => {
    // A sub is unique per issuer only (OpenID Connect Core §2): the same sub at two servers names two people.
    const other = await startStack({ provider: { configuration: logoutProviderConfiguration }, auth: { keyPrefix: stack.authOptions.keyPrefix } });
    try {
      const here = await loggedInUser();
      const there = new Browser();
      await there.login(`${other.appUrl}/login?returnTo=/me`, { login: here.sub });
      expect((await me(there, other.appUrl)).status).toBe(200);

      const fromHere = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub: here.sub }));
      expect((await sendLogoutToken(stack.appUrl, fromHere)).status).toBe(200);
      expect((await me(here.browser, stack.appUrl)).status).toBe(401);
      expect((await me(there, other.appUrl)).status).toBe(200);

      // The other server's own logout of its user still finds that user's session.
      const fromThere = await signLogoutToken(other.provider, logoutClaims(other.provider.issuer, { sub: here.sub }));
      expect((await sendLogoutToken(other.appUrl, fromThere)).status).toBe(200);
      expect((await me(there, other.appUrl)).status).toBe(401);
    } finally {
      await other.close();
    }
  });

  test.each([
    ['aud: [client id] (an array of one)', [CLIENT_ID], undefined],
    ['an extra aud and azp: client id (issued to this client)', [CLIENT_ID, 'another-client'], CLIENT_ID],
  ])('a token with %s is accepted', async (_name, aud, azp) => {
    const target = await loggedInUser();
    const bystander = await loggedInUser();
    const claims = { ...logoutClaims(stack.provider.issuer, { sub: target.sub }), aud, ...(azp === undefined ? {} : { azp }) };
    expect((await sendLogoutToken(stack.appUrl, await signLogoutToken(stack.provider, claims))).status).toBe(200);
    expect((await me(target.browser, stack.appUrl)).status).toBe(401);
    expect((await me(bystander.browser, stack.appUrl)).status).toBe(200);
  });

  test.each([
    ['no typ', null],
    ['typ "JWT"', 'JWT'],
    ['typ "application/logout+jwt" (the media type in full)', 'application/logout+jwt'],
  ])('a token with %s is accepted (explicit typing is optional)', async (_name, typ) => {
    const target = await loggedInUser();
    const bystander = await loggedInUser();
    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub: target.sub }), { typ });
    expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
    expect((await me(target.browser, stack.appUrl)).status).toBe(401);
    expect((await me(bystander.browser, stack.appUrl)).status).toBe(200);
  });
});

test('a used jti is remembered until the token could no longer be accepted: 10 minutes after its iat plus the clock tolerance, though exp is later', async () => {
  const { sub } = await loggedInUser();
  const pattern = `${String(stack.authOptions.keyPrefix)}once:logout-jti:*`;
  const before = new Set(await stack.redis.keys(pattern));
  const claims = { ...logoutClaims(stack.provider.issuer, { sub }), exp: now() + 3600 };

  expect((await sendLogoutToken(stack.appUrl, await signLogoutToken(stack.provider, claims))).status).toBe(200);
  const added = (await stack.redis.keys(pattern)).filter((key) => !before.has(key));
  expect(added).toHaveLength(1);
  const ttl = await stack.redis.ttl(added[0]!);
  const tolerance = stack.authOptions.clockTolerance ?? 30;
  expect(ttl).toBeGreaterThan(600 + tolerance - 10);
  expect(ttl).toBeLessThanOrEqual(600 + tolerance + 1);
});

describe('logins whose ID token carried no sid', () => {
  // This stack's client is registered without backchannel_logout_session_required, so oidc-provider puts no sid into
  // its ID tokens. An OP whose registration changes later (or that sends sids only in logout tokens) names a sid
  // these logins never recorded.
  test('a logout token with sid and sub ends the user\'s sid-less logins, and nobody else\'s', async () => {
    const target = await loggedInUser();
    const bystander = await loggedInUser();
    const { claims } = JSON.parse((await me(target.browser, stack.appUrl)).body) as { claims: Record<string, unknown> };
    expect(claims.sub).toBe(target.sub);
    expect(claims).not.toHaveProperty('sid');

    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub: target.sub, sid: `op-session-${target.sub}` }));
    expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
    expect((await me(target.browser, stack.appUrl)).status).toBe(401);
    expect((await me(bystander.browser, stack.appUrl)).status).toBe(200);
  });

  test("a logout token with sid and sub that arrives before the callback has indexed the user's sid-less login still ends it", async () => {
    // The lookup cannot find a login that is not indexed yet; the mark of the user's sid-less logins is what the
    // callback finds.
    const sub = `user${++user}`;
    let logoutStatus: number | undefined;
    const browser = new Browser();
    const { result, ran } = await duringLogin(
      () => browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: sub }),
      async () => {
        const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub, sid: `op-session-${sub}` }));
        logoutStatus = (await sendLogoutToken(stack.appUrl, token)).status;
      },
    );

    expect(ran).toBe(true);
    expect(logoutStatus).toBe(200);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
    expect((await me(browser, stack.appUrl)).status).toBe(401);
  });

  test("an older logout of the user, delivered after a newer one (a retry), does not lower the newer one's mark", async () => {
    // The newer logout's mark ends the login in flight; the older token, still valid, comes in before the callback
    // checks. Its mark names an earlier time, so written over the newer one it would leave the login alive.
    const sub = `user${++user}`;
    const statuses: number[] = [];
    const browser = new Browser();
    const { result, ran } = await duringLogin(
      () => browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: sub }),
      async () => {
        const newer = logoutClaims(stack.provider.issuer, { sub });
        const older = { ...logoutClaims(stack.provider.issuer, { sub }), iat: now() - 30 };
        for (const claims of [newer, older]) statuses.push((await sendLogoutToken(stack.appUrl, await signLogoutToken(stack.provider, claims))).status);
      },
    );

    expect(ran).toBe(true);
    expect(statuses).toEqual([200, 200]);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
    expect((await me(browser, stack.appUrl)).status).toBe(401);
  });
});

describe('a logout and a login in the same second', () => {
  // Logout tokens and ID tokens carry whole seconds, so within one second what counts is which came first here: the
  // login's code exchange or the logout's mark. Only Date is faked, and moved by hand, so that both fall in one second
  // whatever the machine's speed.
  const second = () => (Math.ceil(Date.now() / 1000) + 2) * 1000;
  const fakeDate = (now: number) =>
    jest.useFakeTimers({
      doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'],
      now,
    });

  test('a login whose code exchange came after the logout of its user stands', async () => {
    const { sub, browser } = await loggedInUser();
    const t0 = second();
    fakeDate(t0);
    try {
      expect((await sendLogoutToken(stack.appUrl, await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }))))
        .status).toBe(200);
      expect((await me(browser, stack.appUrl)).status).toBe(401);
      jest.setSystemTime(t0 + 400);
      const again = new Browser();
      expect((await again.login(`${stack.appUrl}/login?returnTo=/me`, { login: sub })).status).toBe(200);
      const { claims } = JSON.parse((await me(again, stack.appUrl)).body) as { claims: { iat: number } };
      expect(claims.iat).toBe(t0 / 1000);
    } finally {
      jest.useRealTimers();
    }
  });

  test('a login whose tokens came in before the logout of its user is ended', async () => {
    const sub = `user${++user}`;
    const t0 = second();
    fakeDate(t0 + 100);
    const browser = new Browser();
    let result: Awaited<ReturnType<Browser['login']>>;
    let ran: boolean;
    try {
      ({ result, ran } = await duringLogin(
        () => browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: sub }),
        async () => {
          jest.setSystemTime(t0 + 300);
          const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }));
          expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
        },
      ));
    } finally {
      jest.useRealTimers();
    }

    expect(ran).toBe(true);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
  });

  test('a login whose code exchange was sent before the logout is ended, though its answer came after the mark', async () => {
    // The provider holds the token request while the logout comes and is marked: the answer reaches the app later,
    // but its ID token may well be older than the logout.
    const sub = `user${++user}`;
    const t0 = second();
    let armed = true;
    stack.provider.provider.use(async (ctx, next) => {
      if (armed && ctx.method === 'POST' && ctx.path === '/token') {
        armed = false;
        jest.setSystemTime(t0 + 300);
        const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }));
        expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
        jest.setSystemTime(t0 + 500);
      }
      await next();
    });
    // Koa composes its middleware when callback() is called: serve with a handler composed now.
    const handler = stack.provider.provider.callback();
    stack.provider.server.removeAllListeners('request');
    stack.provider.server.on('request', handler);
    fakeDate(t0 + 100);
    let result: Awaited<ReturnType<Browser['login']>>;
    try {
      result = await new Browser().login(`${stack.appUrl}/login?returnTo=/me`, { login: sub });
    } finally {
      jest.useRealTimers();
    }

    expect(armed).toBe(false);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
  });
});

describe('back-channel request shape', () => {
  test('GET is refused with 405', async () => {
    const response = await fetch(`${stack.appUrl}/backchannel-logout`, { headers: { accept: 'application/json' } });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('POST');
  });

  test.each([
    ['a JSON body', 'application/json', JSON.stringify({ logout_token: 'x' })],
    ['no logout_token', 'application/x-www-form-urlencoded', 'other=1'],
    ['two logout_tokens', 'application/x-www-form-urlencoded', 'logout_token=a&logout_token=b'],
    ['an oversized body', 'application/x-www-form-urlencoded', `logout_token=${'a'.repeat(20_000)}`],
  ])('%s is refused with 400 invalid_request', async (_name, type, body) => {
    const response = await fetch(`${stack.appUrl}/backchannel-logout`, { method: 'POST', headers: { 'content-type': type }, body });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: 'invalid_request' });
  });

  test('a form-encoded body sent under another content type is refused, even with a valid token, and ends nothing', async () => {
    const { sub, browser } = await loggedInUser();
    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }));

    // text/plain is what a cross-site page can send without a preflight.
    const response = await fetch(`${stack.appUrl}/backchannel-logout`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: new URLSearchParams({ logout_token: token }).toString(),
    });

    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: 'invalid_request' });
    expect((await me(browser, stack.appUrl)).status).toBe(200);
  });

  /**
   * A form POST to the back-channel route with `headers`, its body written by `send` (which may leave it unfinished);
   * the answer, or a rejection when none comes within 5 seconds.
   */
  function postForm(headers: Record<string, string>, send: (request: ClientRequest) => void): Promise<{ status: number; body: string }> {
    const { port } = new URL(stack.appUrl);
    return new Promise((resolve, reject) => {
      const request = httpRequest(
        { host: '127.0.0.1', port, method: 'POST', path: '/backchannel-logout', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers } },
        (response) => {
          let body = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (body += chunk));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
        },
      );
      // The server may answer and close before all of it is sent.
      request.on('error', reject);
      request.setTimeout(5_000, () => {
        request.destroy();
        reject(new Error('no answer within 5 seconds'));
      });
      send(request);
    });
  }

  test('an oversized body sent chunked, without a Content-Length, is refused with 400 invalid_request', async () => {
    const answer = await postForm({ 'transfer-encoding': 'chunked' }, (request) => {
      request.write('logout_token=');
      for (let i = 0; i < 20; i++) request.write('a'.repeat(1024));
      request.end();
    });

    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ error: 'invalid_request' });
  });

  test('a declared Content-Length over the limit is refused at once, without waiting for a body that may never come', async () => {
    // Only the start of the declared million bytes: the answer must not wait for the rest.
    const answer = await postForm({ 'content-length': '1000000' }, (request) => request.write('logout_token='));

    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ error: 'invalid_request' });
  });

  test('works behind an app-wide form parser that already read the body', async () => {
    const app = express();
    app.use(express.urlencoded({ extended: false }));
    app.use(session({ store: new RedisStore({ client: stack.redis, prefix: stack.sessionPrefix }), secret: SESSION_SECRET, resave: false, saveUninitialized: false }));
    app.use(auth(stack.authOptions));
    const { sub, browser } = await loggedInUser();
    const token = await signLogoutToken(stack.provider, { ...logoutClaims(stack.provider.issuer, { sub }), events: { [BCL_EVENT]: {} } });

    const response = await supertest(app).post('/backchannel-logout').type('form').send({ logout_token: token });

    expect(response.status).toBe(200);
    expect((await me(browser, stack.appUrl)).status).toBe(401);
  });

  test('behind an app-wide form parser, two logout_tokens are refused too (the parser made them an array)', async () => {
    const app = express();
    app.use(express.urlencoded({ extended: false }));
    app.use(session({ store: new RedisStore({ client: stack.redis, prefix: stack.sessionPrefix }), secret: SESSION_SECRET, resave: false, saveUninitialized: false }));
    app.use(auth(stack.authOptions));
    const { sub, browser } = await loggedInUser();
    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }));

    const response = await supertest(app).post('/backchannel-logout').type('form').send(`logout_token=${token}&logout_token=${token}`);

    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ error: 'invalid_request' });
    expect((await me(browser, stack.appUrl)).status).toBe(200);
  });

  test('a body the sender abandons mid-way is a 400 invalid_request of the route, not an error for the app', async () => {
    // The app's error handler sees any error the route passes on; the response the route made is read at close.
    const passedOn: unknown[] = [];
    let answered: { status: number; cacheControl: unknown; type: unknown } | undefined;
    let markEnded!: () => void;
    const ended = new Promise<void>((resolve) => (markEnded = resolve));
    const app = express();
    app.use((_req, res, next) => {
      // The client is gone, so nothing reaches it: what the app answered is read when the answer ends.
      const end = res.end.bind(res) as (...args: unknown[]) => express.Response;
      res.end = ((...args: unknown[]) => {
        answered = { status: res.statusCode, cacheControl: res.getHeader('cache-control'), type: res.getHeader('content-type') };
        markEnded();
        return end(...args);
      }) as typeof res.end;
      next();
    });
    app.use(session({ store: new RedisStore({ client: stack.redis, prefix: stack.sessionPrefix }), secret: SESSION_SECRET, resave: false, saveUninitialized: false }));
    app.use(auth(stack.authOptions));
    app.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      passedOn.push(err);
      res.status(500).end();
    });
    const server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const request = httpRequest({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/backchannel-logout',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '1000' },
      });
      request.on('error', () => undefined);
      request.write('logout_token=eyJhbGciOiJSUzI1NiJ9.');
      // Let the route start reading, then drop the connection before the declared length arrived.
      await new Promise((resolve) => setTimeout(resolve, 100));
      request.destroy();
      await ended;

      expect(passedOn).toEqual([]);
      expect(answered).toEqual({ status: 400, cacheControl: 'no-store', type: expect.stringMatching(/^application\/json/) });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test.each([
    ['without redis', { redis: undefined }],
    ['without an openid scope', { scope: 'email' }],
  ])('the route is not mounted %s', async (_name, overrides) => {
    const app = buildApp({ redis: stack.redis, sessionPrefix: stack.sessionPrefix, auth: { ...stack.authOptions, ...overrides } });
    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub: 'anyone' }));
    const response = await supertest(app).post('/backchannel-logout').type('form').send({ logout_token: token });
    expect(response.status).toBe(404);
  });
});

/**
 * `authorizationParams.max_age` (OpenID Connect Core §3.1.2.1, §3.1.3.7 step 13): the callback must refuse an ID token
 * whose `auth_time` is missing or older than the max_age the authorization request asked for, plus `clockTolerance`.
 * Against oidc-provider (which honours max_age, and once made to ignore it) and the rogue provider.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { interactionPolicy } from 'oidc-provider';
import { buildApp, listen, startStack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startRogueStack, type RogueStack, type TokenContext } from '../helpers/rogue-provider.js';
import { browserSessionId, expectRefusal, loginUntilCallback, observe, readSession, type Observed } from '../helpers/security.js';

const isCallback = (u: URL) => u.pathname === '/callback';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A browser that starts with `from`'s cookies at the provider (its login there) but no session at the app. */
function sameProviderLogin(from: Browser, providerHost = 'localhost'): Browser {
  const browser = new Browser();
  browser.jar.set(providerHost, new Map(from.jar.get(providerHost)));
  return browser;
}

async function claimsOf(browser: Browser, appUrl: string): Promise<Record<string, unknown>> {
  const me = await browser.request(`${appUrl}/me`, { headers: { accept: 'application/json' } });
  expect(me.status).toBe(200);
  return (JSON.parse(me.body) as { claims: Record<string, unknown> }).claims;
}

describe('max_age against oidc-provider', () => {
  // max_age 1 with no clock tolerance: a provider login older than about two seconds is too old.
  const auth = { authorizationParams: { max_age: '1' }, clockTolerance: 0 };

  test('a provider that honours max_age makes the user log in again; the app accepts the fresh auth_time', async () => {
    const stack = await startStack({ auth });
    try {
      const first = new Browser();
      const pending = await first.login(`${stack.appUrl}/login`, { stopAtCallback: isCallback });
      const callback = new URL(pending.steps.at(-1)!.location!);
      const sent = new URL(pending.steps.find((s) => s.location?.includes('/auth?'))!.location!);
      expect(sent.searchParams.get('max_age')).toBe('1');
      const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(first, stack.appUrl)!);
      expect(session?.oauth?.tx?.[callback.searchParams.get('state')!]).toMatchObject({ maxAge: 1 });
      expect((await first.request(callback)).status).toBe(302);
      const firstAuthTime = (await claimsOf(first, stack.appUrl)).auth_time as number;
      expect(typeof firstAuthTime).toBe('number');

      await sleep(2100);
      const second = sameProviderLogin(first);
      const landed = await second.login(`${stack.appUrl}/login`);
      // The provider asked for the password again (its login form was posted), and the app took the result.
      expect(landed.steps.some((s) => /\/interaction\//.test(s.url))).toBe(true);
      expect(landed.status).toBe(200);
      expect((await claimsOf(second, stack.appUrl)).auth_time).toBeGreaterThan(firstAuthTime);
    } finally {
      await stack.close();
    }
  });

  test('a provider that ignores max_age hands out a stale auth_time: the callback refuses it, no login is made', async () => {
    // oidc-provider without its max_age check: an existing provider session is reused however old it is.
    const policy = interactionPolicy.base();
    policy.get('login')!.checks.remove('max_age');
    const stack = await startStack({ auth, provider: { configuration: { interactions: { policy } } } });
    try {
      const observed = observe(stack);
      const first = new Browser();
      await first.login(`${stack.appUrl}/login`);
      expect((await first.request(`${stack.appUrl}/me`)).status).toBe(200);

      await sleep(2100);
      const second = sameProviderLogin(first);
      const pending = await loginUntilCallback(stack, second);
      await expectRefusal(observed, () => second.request(pending.callbackUrl, { headers: { accept: 'application/json' } }), {
        status: 400,
        code: 'invalid_id_token',
        // The tokens of that answer are revoked: nobody holds them.
        calls: ['POST /token', 'POST /token/revocation', 'POST /token/revocation'],
        secrets: pending.secrets,
      });
      expect((await second.request(`${stack.appUrl}/me`, { headers: { accept: 'application/json' } })).status).toBe(401);
    } finally {
      await stack.close();
    }
  });
});

describe('max_age against a rogue provider', () => {
  let stack: RogueStack;
  let observed: Observed;
  beforeAll(async () => {
    stack = await startRogueStack({ auth: { authorizationParams: { max_age: '60' } } });
    observed = { redis: stack.redis, sessionPrefix: stack.sessionPrefix, traffic: stack.traffic };
  });
  afterAll(async () => stack.close());

  const now = () => Math.floor(Date.now() / 1000);

  /** Runs a login whose ID token carries `claims` (on top of valid ones) and returns the browser and its callback. */
  async function loginWith(claims: (context: TokenContext) => Record<string, unknown>) {
    stack.rogue.onToken = async (context) => context.respond(await stack.rogue.sign({ ...context.claims(), ...claims(context) }));
    const browser = new Browser();
    browser.headers = { accept: 'application/json' };
    return { browser, pending: await loginUntilCallback(stack, browser) };
  }

  afterAll(() => stack.rogue.reset());

  test.each([
    ['within max_age', 30],
    ['past max_age but within clockTolerance (30 s)', 60 + 25],
  ])('an auth_time %s is accepted (control)', async (_name, age) => {
    const { browser, pending } = await loginWith(() => ({ auth_time: now() - age }));
    expect(new URLSearchParams(stack.rogue.requests.findLast((r) => r.path === '/authorize')!.search).get('max_age')).toBe('60');
    const landed = await browser.request(pending.callbackUrl);
    expect(landed.status).toBe(302);
    expect((await claimsOf(browser, stack.appUrl)).auth_time).toEqual(expect.any(Number));
  });

  test.each<[string, (c: TokenContext) => Record<string, unknown>]>([
    ['missing auth_time', () => ({})],
    ['auth_time older than max_age + clockTolerance', () => ({ auth_time: now() - 60 - 30 - 5 })],
    ['auth_time an hour old', () => ({ auth_time: now() - 3600 })],
  ])('%s → 400 invalid_id_token after the token request, no login', async (_name, claims) => {
    const { browser, pending } = await loginWith(claims);
    const refused = await expectRefusal(observed, () => browser.request(pending.callbackUrl), {
      status: 400,
      code: 'invalid_id_token',
      calls: ['POST /token'],
      secrets: () => [...pending.secrets, ...stack.rogue.issued],
    });
    expect(JSON.parse(refused.body).error_description).toMatch(/auth_time|authentication/);
    expect(browserSessionId(browser, stack.appUrl)).toBe(pending.sid);
    expect((await browser.request(`${stack.appUrl}/me`)).status).toBe(401);
  });

  test('the max_age a login sent is checked even if the app that gets its callback no longer sends one', async () => {
    // A deployment in between: the callback reaches a process configured without max_age, sharing the sessions.
    const listener = await listen();
    try {
      const app = buildApp({ redis: stack.redis, sessionPrefix: stack.sessionPrefix, auth: { ...stack.authOptions, authorizationParams: {} } });
      listener.handle(app);
      const { browser, pending } = await loginWith(() => ({ auth_time: now() - 3600 }));
      const moved = new URL(`${pending.callbackUrl.pathname}${pending.callbackUrl.search}`, listener.url);
      await expectRefusal(observed, () => browser.request(moved), {
        status: 400,
        code: 'invalid_id_token',
        // The other process discovers the server for itself (auth_time is refused before the key set is needed).
        calls: ['GET /.well-known/openid-configuration', 'POST /token'],
        secrets: () => [...pending.secrets, ...stack.rogue.issued],
      });
    } finally {
      await listener.close();
    }
  });
});

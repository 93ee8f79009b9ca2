import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { Redis } from 'ioredis';
import { buildApp, CLIENT_ID, CLIENT_SECRET, connectRedis, listen, sessionCookie, type Listener } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startProvider, type TestProvider } from '../helpers/provider.js';
import { startRogueStack, type RogueStack } from '../helpers/rogue-provider.js';
import { endSessionAtProvider, logoutProviderConfiguration, me, postLogout, sessionIdOf, storedSession, tryRefresh, userinfoStatus } from './support.js';

let provider: TestProvider;
let app: Listener;
let redis: Redis;
const keyPrefix = `test:${randomUUID()}:`;
const sessionPrefix = `test:${randomUUID()}:sess:`;

beforeAll(async () => {
  app = await listen();
  provider = await startProvider({
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [`${app.url}/callback`],
        post_logout_redirect_uris: [`${app.url}/logout/callback`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    configuration: logoutProviderConfiguration,
  });
  redis = connectRedis();
  app.handle(
    buildApp({
      redis,
      sessionPrefix,
      auth: {
        issuer: provider.issuer,
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUri: `${app.url}/callback`,
        allowInsecureRequests: true,
        scope: 'openid email',
        redis,
        keyPrefix,
        idpLogout: true,
        postLogoutRedirect: '/bye',
      },
    }),
  );
});
afterAll(async () => {
  await app.close();
  await provider.close();
  redis.disconnect();
});

/** Logs in, then POSTs /logout: returns the browser and where the app sent it (the end-session URL). */
async function startLogout() {
  const browser = new Browser();
  await browser.login(`${app.url}/login?returnTo=/me`);
  const loginCookie = sessionCookie(browser, app.url)!;
  const session = await storedSession(redis, sessionPrefix, loginCookie);
  const login = (session?.oauth as { login: { id: string; tokens: { accessToken: string } } }).login;
  // The session copy has no raw ID token: the token store keeps the whole set.
  const record = JSON.parse((await redis.get(`${keyPrefix}tokens:${login.id}`))!) as { tokens: { accessToken: string; idToken: string } };
  const tokens = record.tokens;
  const response = await postLogout(browser, app.url);
  expect(response.status).toBe(303);
  return { browser, loginCookie, tokens, endSession: new URL(response.headers.get('location')!) };
}

/** Every session id in the back-channel logout index. */
/**
 * Makes the first `command` on a session key (connect-redis's SET or DEL) fail, as a store outage would; `calls()`
 * counts the calls on session keys since, `undo()` puts the client back.
 */
function failFirstSessionCall(command: 'set' | 'del'): { calls: () => number; undo: () => void } {
  const client = redis as unknown as Record<'set' | 'del', (...args: unknown[]) => Promise<unknown>>;
  const original = client[command].bind(client);
  let calls = 0;
  client[command] = async (...args: unknown[]) => {
    if (String(args[0]).startsWith(sessionPrefix) && calls++ === 0) throw new Error('Connection is closed.');
    return original(...args);
  };
  return { calls: () => calls, undo: () => void (client[command] = original) };
}

async function indexedSessionIds(): Promise<string[]> {
  const keys = await redis.keys(`${keyPrefix}logout:*`);
  return (await Promise.all(keys.map((key) => redis.smembers(key)))).flat();
}

/** Confirms the logout on the provider's page; returns the URL it sends the browser back to. */
async function confirmAtProvider(browser: Browser, endSession: URL): Promise<URL> {
  const confirmed = await endSessionAtProvider(browser, provider.issuer, endSession.search);
  expect(confirmed.status).toBe(303);
  return new URL(confirmed.headers.get('location')!);
}

describe('RP-initiated logout (idpLogout: true)', () => {
  test('round trip: local logout, end-session at the provider with id_token_hint and state, checked return to a fixed page', async () => {
    const endedBefore = provider.count('end_session.success');
    const { browser, loginCookie, tokens, endSession } = await startLogout();

    expect(`${endSession.origin}${endSession.pathname}`).toBe(`${provider.issuer}/session/end`);
    expect(endSession.searchParams.get('id_token_hint')).toBe(tokens.idToken);
    expect(endSession.searchParams.get('post_logout_redirect_uri')).toBe(`${app.url}/logout/callback`);
    const state = endSession.searchParams.get('state');
    expect(state).toMatch(/^[A-Za-z0-9_-]{22,}$/);
    // The local logout happened before the browser left: the login's session is gone, tokens revoked.
    expect(await storedSession(redis, sessionPrefix, loginCookie)).toBeNull();
    expect((await me(browser, app.url)).status).toBe(401);
    expect(await userinfoStatus(provider.issuer, tokens.accessToken)).toBe(401);

    const back = await confirmAtProvider(browser, endSession);
    expect(provider.count('end_session.success')).toBe(endedBefore + 1);
    expect(`${back.origin}${back.pathname}`).toBe(`${app.url}/logout/callback`);
    expect(back.searchParams.get('state')).toBe(state);

    const landed = await browser.request(back);
    expect(landed.status).toBe(303);
    expect(landed.headers.get('location')).toBe('/bye');
    expect(sessionCookie(browser, app.url)).toBeUndefined();

    // The provider's session ended too: a new login asks for credentials again instead of coming straight back.
    const again = await browser.follow(`${app.url}/login`);
    expect(again.status).toBe(200);
    expect(again.url.startsWith(provider.issuer)).toBe(true);
    expect(again.body).toContain('name="login"');
  });

  test('only a GET is the return: a POST there goes on to the app (its 404) and spends nothing', async () => {
    const { browser, endSession } = await startLogout();
    const back = await confirmAtProvider(browser, endSession);

    expect((await browser.request(back, { method: 'POST' })).status).toBe(404);
    expect((await browser.request(back)).status).toBe(303);
  });

  test('the return is one-time: replaying it is refused', async () => {
    const { browser, endSession } = await startLogout();
    const back = await confirmAtProvider(browser, endSession);
    const cookieBeforeReturn = sessionCookie(browser, app.url)!;
    expect((await browser.request(back)).status).toBe(303);

    const replayed = await browser.request(back, { headers: { accept: 'application/json', cookie: `connect.sid=${cookieBeforeReturn}` } });
    expect(replayed.status).toBe(400);
    expect(JSON.parse(replayed.body)).toMatchObject({ error: 'invalid_state' });
  });

  test.each([
    ['a forged state', (back: URL) => `${back.origin}${back.pathname}?state=${'A'.repeat(43)}`, 'invalid_state'],
    ['no state', (back: URL) => `${back.origin}${back.pathname}`, 'invalid_state'],
    ['an empty state', (back: URL) => `${back.origin}${back.pathname}?state=`, 'invalid_state'],
    ['a state shorter than the one sent', (back: URL) => `${back.origin}${back.pathname}?state=short`, 'invalid_state'],
    ['a repeated state', (back: URL) => `${back.href}&state=${back.searchParams.get('state')!}`, 'invalid_request'],
  ])('a return with %s is refused with 400 (%s)', async (_name, tamper, code) => {
    const { browser, endSession } = await startLogout();
    const back = await confirmAtProvider(browser, endSession);

    const response = await browser.request(tamper(back), { headers: { accept: 'application/json' } });

    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: code });
    expect(response.headers.get('location')).toBeNull();
  });

  test('a return older than the logout state lifetime (10 minutes) is refused', async () => {
    const { browser, endSession } = await startLogout();
    const back = await confirmAtProvider(browser, endSession);
    // The placeholder session's logout state, aged past its lifetime in the store.
    const key = `${sessionPrefix}${sessionIdOf(sessionCookie(browser, app.url)!)}`;
    const stored = JSON.parse((await redis.get(key))!) as { oauth: { logout: { createdAt: number } } };
    stored.oauth.logout.createdAt -= 10 * 60 * 1000 + 1000;
    await redis.set(key, JSON.stringify(stored), 'KEEPTTL');

    const response = await browser.request(back, { headers: { accept: 'application/json' } });

    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: 'invalid_state' });
    expect(String(JSON.parse(response.body).error_description)).toMatch(/took too long/);
  });

  test('a return well within the logout state lifetime (9 minutes old) completes', async () => {
    const { browser, endSession } = await startLogout();
    const back = await confirmAtProvider(browser, endSession);
    const key = `${sessionPrefix}${sessionIdOf(sessionCookie(browser, app.url)!)}`;
    const stored = JSON.parse((await redis.get(key))!) as { oauth: { logout: { createdAt: number } } };
    stored.oauth.logout.createdAt -= 9 * 60 * 1000;
    await redis.set(key, JSON.stringify(stored), 'KEEPTTL');

    const landed = await browser.request(back);

    expect(landed.status).toBe(303);
    expect(landed.headers.get('location')).toBe('/bye');
  });

  test.each([
    ['a wrong state spends the pending logout: the genuine return after it is refused', (back: URL) => `${back.origin}${back.pathname}?state=${'A'.repeat(43)}`, 400],
    ['a return without a state leaves the pending logout alone: the genuine return after it completes', (back: URL) => `${back.origin}${back.pathname}`, 303],
    ['a return with an empty state leaves the pending logout alone: the genuine return after it completes', (back: URL) => `${back.origin}${back.pathname}?state=`, 303],
  ])('%s', async (_name, tamper, genuineStatus) => {
    const { browser, endSession } = await startLogout();
    const back = await confirmAtProvider(browser, endSession);

    const tampered = await browser.request(tamper(back), { headers: { accept: 'application/json' } });
    expect(tampered.status).toBe(400);
    const genuine = await browser.request(back, { headers: { accept: 'application/json' } });

    expect(genuine.status).toBe(genuineStatus);
    if (genuineStatus === 400) expect(JSON.parse(genuine.body)).toMatchObject({ error: 'invalid_state' });
  });

  test('two returns racing with the same session: exactly one completes (the state is claimed once across requests)', async () => {
    const { browser, endSession } = await startLogout();
    const back = await confirmAtProvider(browser, endSession);
    const cookie = `connect.sid=${sessionCookie(browser, app.url)!}`;

    // Both load the session before either has destroyed it: only the shared single-use claim tells them apart.
    const answers = await Promise.all(Array.from({ length: 5 }, () => browser.request(back, { headers: { accept: 'application/json', cookie } })));

    expect(answers.map((a) => a.status).sort()).toEqual([303, 400, 400, 400, 400]);
  });

  test("another browser's state is refused: the state is bound to the browser that logged out", async () => {
    const first = await startLogout();
    const second = await startLogout();
    const firstBack = await confirmAtProvider(first.browser, first.endSession);

    const response = await second.browser.request(firstBack, { headers: { accept: 'application/json' } });

    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: 'invalid_state' });
  });

  test('the session store failing to save the logout state after the login session is gone: the login still ends in full', async () => {
    const browser = new Browser();
    await browser.login(`${app.url}/login?returnTo=/me`);
    const loginCookie = sessionCookie(browser, app.url)!;
    const loginSessionId = sessionIdOf(loginCookie);
    const login = ((await storedSession(redis, sessionPrefix, loginCookie))?.oauth as { login: { id: string } }).login;
    const { tokens } = JSON.parse((await redis.get(`${keyPrefix}tokens:${login.id}`))!) as { tokens: { accessToken: string; refreshToken: string } };
    expect(await indexedSessionIds()).toContain(loginSessionId);

    // regenerate() destroys the logged-in session (DEL); the save of the fresh one that holds the state (SET) fails.
    const failing = failFirstSessionCall('set');
    let response;
    try {
      response = await postLogout(browser, app.url, { accept: 'application/json' });
    } finally {
      failing.undo();
    }
    expect(failing.calls()).toBeGreaterThanOrEqual(1);

    // The logout at the provider could not start, and the answer says so; it never sends the browser there.
    expect(response.status).toBe(503);
    expect(JSON.parse(response.body)).toMatchObject({ error: 'session_unavailable' });
    expect(response.headers.get('location')).toBeNull();
    expect(JSON.parse(response.body).error_description).toMatch(/logged out of this app/);
    // But nothing is left half-ended: the login's session is gone, its token-store entry a tombstone, its tokens
    // revoked at the provider, and it is out of the back-channel index.
    expect(await storedSession(redis, sessionPrefix, loginCookie)).toBeNull();
    expect(sessionCookie(browser, app.url)).toBeUndefined();
    expect((await me(new Browser(), app.url, `connect.sid=${loginCookie}`)).status).toBe(401);
    expect(JSON.parse((await redis.get(`${keyPrefix}tokens:${login.id}`))!)).toMatchObject({ ended: true });
    expect(await tryRefresh(provider.issuer, tokens.refreshToken)).toEqual({ status: 400, error: 'invalid_grant' });
    expect(await userinfoStatus(provider.issuer, tokens.accessToken)).toBe(401);
    expect(await indexedSessionIds()).not.toContain(loginSessionId);
  });

  test('when the store also fails to drop the fresh session, the browser is still told to drop its cookie', async () => {
    const browser = new Browser();
    await browser.login(`${app.url}/login?returnTo=/me`);
    const loginCookie = sessionCookie(browser, app.url)!;

    // The logged-in session is destroyed (the first DEL); then the store fails: the save (SET) and the next DEL.
    const client = redis as unknown as Record<'set' | 'del', (...args: unknown[]) => Promise<unknown>>;
    const [set, del] = [client.set.bind(client), client.del.bind(client)];
    let dels = 0;
    client.set = async (...args: unknown[]) => {
      if (String(args[0]).startsWith(sessionPrefix)) throw new Error('Connection is closed.');
      return set(...args);
    };
    client.del = async (...args: unknown[]) => {
      if (String(args[0]).startsWith(sessionPrefix) && dels++ > 0) throw new Error('Connection is closed.');
      return del(...args);
    };
    let response;
    try {
      response = await postLogout(browser, app.url, { accept: 'application/json' });
    } finally {
      client.set = set;
      client.del = del;
    }

    expect(dels).toBe(2);
    expect(response.status).toBe(503);
    expect(await storedSession(redis, sessionPrefix, loginCookie)).toBeNull();
    expect(sessionCookie(browser, app.url)).toBeUndefined();
  });

  test('the session store failing to destroy the login session: the login is kept in this browser, and a retry logs out', async () => {
    const browser = new Browser();
    await browser.login(`${app.url}/login?returnTo=/me`);
    const loginCookie = sessionCookie(browser, app.url)!;
    const loginSessionId = sessionIdOf(loginCookie);

    // regenerate() destroys the logged-in session with DEL: that one command fails, once.
    const failing = failFirstSessionCall('del');
    let failed;
    try {
      failed = await postLogout(browser, app.url, { accept: 'application/json' });
    } finally {
      failing.undo();
    }
    expect(failing.calls()).toBe(1);
    expect(failed.status).toBe(503);
    expect(JSON.parse(failed.body)).toMatchObject({ error: 'session_unavailable' });

    // As after a failed POST /logout without idpLogout: the session is alive, still the browser's, still findable by
    // back-channel logout; not swapped for an empty one that would leave it alive out of the user's reach.
    expect(failed.headers.get('set-cookie')).toBeNull();
    expect(sessionCookie(browser, app.url)).toBe(loginCookie);
    expect((await me(browser, app.url)).status).toBe(200);
    expect(await indexedSessionIds()).toContain(loginSessionId);

    const retried = await postLogout(browser, app.url);
    expect(retried.status).toBe(303);
    expect(new URL(retried.headers.get('location')!).pathname).toBe('/session/end');
    expect(await storedSession(redis, sessionPrefix, loginCookie)).toBeNull();
  });

  test('without a login there is nothing to end at the provider: local logout only', async () => {
    const browser = new Browser();
    const response = await postLogout(browser, app.url);
    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toBe('/bye');
  });
});

describe('RP-initiated logout with an end_session_endpoint the library cannot use', () => {
  let rogue: RogueStack;
  beforeAll(async () => {
    rogue = await startRogueStack({ auth: { idpLogout: true, postLogoutRedirect: '/bye' } });
    // openid-client refuses to build a URL from it (as it refuses an http: one without allowInsecureRequests).
    rogue.rogue.metadata.end_session_endpoint = 'not a URL';
  });
  afterAll(async () => rogue.close());

  test('local logout only, as for a server without one: the session ends, no error page', async () => {
    const browser = new Browser();
    await browser.login(`${rogue.appUrl}/login?returnTo=/me`);
    const cookie = sessionCookie(browser, rogue.appUrl)!;
    expect((await me(browser, rogue.appUrl)).status).toBe(200);

    const response = await postLogout(browser, rogue.appUrl);

    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toBe('/bye');
    expect(await storedSession(rogue.redis, rogue.sessionPrefix, cookie)).toBeNull();
    expect(sessionCookie(browser, rogue.appUrl)).toBeUndefined();
    expect((await me(new Browser(), rogue.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
  });
});

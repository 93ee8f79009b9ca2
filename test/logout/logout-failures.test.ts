import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { Browser } from '../helpers/browser.js';
import { buildApp, CLIENT_ID, CLIENT_SECRET, listen, sessionCookie, startStack, type Listener, type Stack } from '../helpers/app.js';
import { getJson, installTokenStub, readLogin, readRecord, startRefreshStack, tokenKey, waitUntilDue, type TokenStub } from '../refresh/support.js';
import { firstOnly, Gate, logoutClaims, logoutProviderConfiguration, me, postLogout, sendLogoutToken, signLogoutToken, storedSession, withFailingCommand } from './support.js';

describe('a logout while a refresh is in flight', () => {
  let stack: Stack;
  let stub: TokenStub;
  beforeAll(async () => {
    stack = await startRefreshStack();
    stub = installTokenStub(stack.provider);
  });
  afterAll(async () => {
    stub.release();
    await stack.close();
  });

  test('the refresh that finishes after the logout cannot bring the login back', async () => {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    const cookie = sessionCookie(browser, stack.appUrl)!;
    const before = await readLogin(stack, browser);
    await waitUntilDue(before.tokens);

    // The provider has rotated the refresh token; its answer is on the way when the user logs out.
    stub.mode = 'hold';
    const granted = stub.nextHang();
    const inflight = getJson(browser, `${stack.appUrl}/api/token`);
    await granted;
    stub.mode = 'pass';
    expect((await postLogout(browser, stack.appUrl)).status).toBe(303);
    stub.release();

    const answer = await inflight;
    expect(answer.status).toBe(401);
    expect(answer.body.error).toBe('login_required');
    // The logout left a tombstone that no refresh can overwrite, so every process sees the login as ended.
    expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ ended: true });
    // The in-flight request may save its copy of the session back; it holds no login.
    const saved = await storedSession(stack.redis, stack.sessionPrefix, cookie);
    expect((saved?.oauth as { login?: unknown } | undefined)?.login).toBeUndefined();
    expect((await me(new Browser(), stack.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
  });
  test('the logout answers only once the revocation of its tokens has ended', async () => {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    stub.revocation = 'hold';
    let answered = false;
    const logout = postLogout(browser, stack.appUrl).then((response) => ((answered = true), response));
    try {
      // Both tokens' revocations reach the server at once (refresh token and access token).
      const deadline = Date.now() + 5000;
      while (stub.heldRevocations < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(stub.heldRevocations).toBe(2);
      // Time for an answer sent without waiting for them to arrive; none may.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(answered).toBe(false);
    } finally {
      stub.revocation = 'pass';
      stub.releaseRevocations();
    }
    const response = await logout;
    expect(response.status).toBe(303);
    expect(stub.heldRevocations).toBe(0);
  });
});

describe('a logout while a request whose refresh is done is still at work', () => {
  let stack: Stack;
  /** Holds `/api/token-then-slow` after its refresh, until the test lets it answer. */
  let gate: Gate;
  beforeAll(async () => {
    stack = await startRefreshStack({}, { afterToken: () => gate.enter() });
  });
  /**
   * A logged-in browser whose request to `/api/token-then-slow` has refreshed its login (version 2 is stored, and in the
   * request's copy of the session) and is held calling an API with the token, until `gate.open()`.
   */
  async function refreshedAndAtWork() {
    gate = new Gate();
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    const cookie = sessionCookie(browser, stack.appUrl)!;
    const before = await readLogin(stack, browser);
    await waitUntilDue(before.tokens);
    const slow = getJson(browser, `${stack.appUrl}/api/token-then-slow`);
    await gate.entered;
    const refreshed = await readRecord(stack.redis, tokenKey(stack, before.id));
    expect(refreshed).toMatchObject({ v: 2 });
    return { browser, cookie, before, slow, refreshed: refreshed! };
  }
  afterAll(async () => {
    gate?.open();
    await stack.close();
  });

  test.each([
    ['POST /logout', async (browser: Browser) => expect((await postLogout(browser, stack.appUrl)).status).toBe(303)],
    [
      'a back-channel logout',
      async (browser: Browser) => {
        const { claims } = await readLogin(stack, browser);
        const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub: String(claims?.sub) }));
        expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
      },
    ],
  ])('%s: the refreshed copy that request saves at its end does not bring the login back', async (_how, logout) => {
    const { browser, cookie, before, slow } = await refreshedAndAtWork();
    await logout(browser);
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();

    // It answers now, and express-session saves its copy of the session, which holds the refreshed login.
    gate.open();
    expect((await slow).status).toBe(200);
    // The library checks once that save is done, and the answer ends after the check: the copy is already gone.
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).toBeNull();
    expect((await me(new Browser(), stack.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
    expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ ended: true });
  });

  test('a login ended by a refused refresh meanwhile (not a logout) keeps its session: only a final tombstone destroys it', async () => {
    // Request A has refreshed (version 2) and is still at work when its session is saved.
    const { browser, cookie, before, slow, refreshed } = await refreshedAndAtWork();
    // The server revokes the grant; request B finds version 2 due, and its refresh is refused: the login ends with a
    // tombstone of the next version, which is not a logout's (the session, and whatever the app keeps in it, stays).
    await waitUntilDue(refreshed.tokens!);
    const revoked = await fetch(`${stack.provider.issuer}/token/revocation`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`,
      },
      body: new URLSearchParams({ token: refreshed.tokens!.refreshToken!, token_type_hint: 'refresh_token' }).toString(),
    });
    expect(revoked.status).toBe(200);
    const refused = await getJson(browser, `${stack.appUrl}/api/token`);
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('login_required');
    expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toEqual({ v: 3, ended: true });

    gate.open();
    expect((await slow).status).toBe(200);
    // A's save is followed by the library's check of the tombstone, done before A's answer ends; it left this session alone.
    const kept = await storedSession(stack.redis, stack.sessionPrefix, cookie);
    expect(kept).not.toBeNull();
    // A's save wrote its copy of the login back, as any stale copy may be (routes that only read the claims know no
    // better, as with any grant the server revoked); the tombstone ends it at its first use of the tokens.
    expect((kept?.oauth as { login?: { id?: string } } | undefined)?.login?.id).toBe(before.id);
    const ended = await getJson(browser, `${stack.appUrl}/api/token`);
    expect(ended.status).toBe(401);
    expect(ended.body.error).toBe('login_required');
    expect((await me(new Browser(), stack.appUrl, `connect.sid=${cookie}`)).status).toBe(401);
    expect(await storedSession(stack.redis, stack.sessionPrefix, cookie)).not.toBeNull();
  });
});

describe('logouts when the session store fails', () => {
  let stack: Stack;
  /** A second instance of the same app: its own process-local state, the same Redis and sessions. */
  let twin: Listener;
  beforeAll(async () => {
    stack = await startStack({ provider: { configuration: logoutProviderConfiguration } });
    twin = await listen();
    twin.handle(buildApp({ redis: stack.redis, sessionPrefix: stack.sessionPrefix, auth: stack.authOptions }));
  });
  afterAll(async () => {
    await twin.close();
    await stack.close();
  });

  /** A logged-in browser, and a logout token for its user as the provider would send it. */
  async function loggedInWithLogoutToken() {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    const session = await storedSession(stack.redis, stack.sessionPrefix, sessionCookie(browser, stack.appUrl)!);
    const { sub } = (session!.oauth as { login: { claims: { sub: string } } }).login.claims;
    return { browser, token: await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub })) };
  }

  test.each([
    ['looking up the sessions to end', 'smembers' as const, () => true],
    ['claiming the jti', 'set' as const, (args: unknown[]) => String(args[0]).includes('once:logout-jti:')],
    // connect-redis destroys a session with DEL.
    ['destroying the sessions', 'del' as const, (args: unknown[]) => String(args[0]).startsWith(stack.sessionPrefix)],
  ])('a back-channel logout that failed in %s succeeds when the server retries the same token', async (_step, command, applies) => {
    const { browser, token } = await loggedInWithLogoutToken();
    const { result: first, failures } = await withFailingCommand(stack.redis, command, () => sendLogoutToken(stack.appUrl, token), firstOnly(applies));
    expect(first.status).toBe(503);
    expect(await first.json()).toMatchObject({ error: 'session_unavailable' });
    expect(failures).toBe(1);
    expect((await me(browser, stack.appUrl)).status).toBe(200);

    // Back-Channel Logout 1.0 §2.8: the server may retry. The retry is not a replay: the sessions are still alive.
    expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
    expect((await me(browser, stack.appUrl)).status).toBe(401);
    // Once it succeeded, the same token is a replay.
    const replay = await sendLogoutToken(stack.appUrl, token);
    expect(replay.status).toBe(400);
    expect(await replay.json()).toMatchObject({ error: 'invalid_logout_token' });
  });

  test('a retry that overtakes a delivery still at work is asked to come back (503) on every instance, not refused as a replay', async () => {
    const { browser, token } = await loggedInWithLogoutToken();
    // The first delivery's lookup of the sessions to end hangs until the test lets it fail.
    const redis = stack.redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const smembers = redis.smembers!.bind(redis);
    let reached!: () => void;
    const atWork = new Promise<void>((resolve) => (reached = resolve));
    let giveUp!: () => void;
    const failure = new Promise<void>((resolve) => (giveUp = resolve));
    redis.smembers = async () => {
      redis.smembers = smembers;
      reached();
      await failure;
      throw new Error('Connection is closed.');
    };
    let first: Promise<Response> | undefined;
    try {
      first = sendLogoutToken(stack.appUrl, token);
      await atWork;
      for (const url of [stack.appUrl, twin.url]) {
        const retry = await sendLogoutToken(url, token);
        expect(retry.status).toBe(503);
        expect(retry.headers.get('retry-after')).toBe('5');
        expect(await retry.json()).toMatchObject({ error: 'session_unavailable' });
      }
    } finally {
      giveUp();
      redis.smembers = smembers;
    }
    // The first delivery fails after all and gives the jti back; the sessions are alive.
    expect((await first)?.status).toBe(503);
    expect((await me(browser, stack.appUrl)).status).toBe(200);

    // The twin's refused claim left no mark of its own there: the server's next retry ends the sessions.
    expect((await sendLogoutToken(twin.url, token)).status).toBe(200);
    expect((await me(browser, stack.appUrl)).status).toBe(401);
    // Finished, the token is a replay on every instance.
    for (const url of [stack.appUrl, twin.url]) {
      const replay = await sendLogoutToken(url, token);
      expect(replay.status).toBe(400);
      expect(await replay.json()).toMatchObject({ error: 'invalid_logout_token' });
    }
  });

  test("a delivery at work holds its token's jti for a 30-second lease only; a finished one keeps it for the token's lifetime", async () => {
    const { token } = await loggedInWithLogoutToken();
    const onceKeys = async () => new Set(await stack.redis.keys(`${String(stack.authOptions.keyPrefix)}once:logout-jti:*`));
    const before = await onceKeys();
    // The delivery's lookup of the sessions to end waits while the test reads its claim.
    const redis = stack.redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const smembers = redis.smembers!.bind(redis);
    let reached!: () => void;
    const atWork = new Promise<void>((resolve) => (reached = resolve));
    let goOn!: () => void;
    const proceed = new Promise<void>((resolve) => (goOn = resolve));
    redis.smembers = async (...args: unknown[]) => {
      redis.smembers = smembers;
      reached();
      await proceed;
      return smembers(...args);
    };
    let delivery: Promise<Response> | undefined;
    let claimKey: string | undefined;
    try {
      delivery = sendLogoutToken(stack.appUrl, token);
      await atWork;
      [claimKey] = [...(await onceKeys())].filter((key) => !before.has(key));
      // A process that dies here blocks the server's retries for the lease, not for the token's two minutes.
      const lease = await stack.redis.pttl(claimKey!);
      expect(lease).toBeGreaterThan(0);
      expect(lease).toBeLessThanOrEqual(30_000);
    } finally {
      goOn();
      redis.smembers = smembers;
    }
    expect((await delivery)?.status).toBe(200);
    // The token was signed to expire in 120 s: its jti stays used at least that long, so that no replay gets through.
    expect(await stack.redis.get(claimKey!)).toBe('used');
    expect(await stack.redis.pttl(claimKey!)).toBeGreaterThan(110_000);
  });

  test('a back-channel logout whose sessions are gone succeeds even when the index cleanup fails, and stays used', async () => {
    const { browser, token } = await loggedInWithLogoutToken();
    const { result: answer, failures } = await withFailingCommand(stack.redis, 'srem', () => sendLogoutToken(stack.appUrl, token), firstOnly());
    expect(answer.status).toBe(200);
    expect(failures).toBe(1);
    expect((await me(browser, stack.appUrl)).status).toBe(401);
    // The jti was not given back: the same token, replayed, cannot end sessions the user creates later.
    const later = await loggedInWithLogoutToken();
    const replay = await sendLogoutToken(stack.appUrl, token);
    expect(replay.status).toBe(400);
    expect(await replay.json()).toMatchObject({ error: 'invalid_logout_token' });
    expect((await me(later.browser, stack.appUrl)).status).toBe(200);
  });

  test("a Redis failure in a new login's last logout check (after the response) is swallowed: no unhandled rejection, which would end the process", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    // The callback checks the session's logout mark twice: after its own save, and after express-session's last one.
    const redis = stack.redis as unknown as { exists: (...args: unknown[]) => Promise<unknown> };
    const exists = redis.exists.bind(redis);
    let checks = 0;
    redis.exists = async (...args: unknown[]) => {
      if (String(args[0]).includes('logout:ended:') && ++checks === 2) throw new Error('Connection is closed.');
      return exists(...args);
    };
    const browser = new Browser();
    try {
      expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200);
      for (let waited = 0; checks < 2 && waited < 2000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      redis.exists = exists;
      process.off('unhandledRejection', onUnhandled);
    }
    expect(checks).toBe(2);
    expect(unhandled).toEqual([]);
    expect((await me(browser, stack.appUrl)).status).toBe(200);
  });

  test('a session that could not be destroyed stays findable by back-channel logout', async () => {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    const cookie = sessionCookie(browser, stack.appUrl)!;
    const session = await storedSession(stack.redis, stack.sessionPrefix, cookie);
    const { sub } = (session!.oauth as { login: { claims: { sub: string } } }).login.claims;

    // connect-redis destroys a session with DEL: that one command fails, once.
    const { result: failed, failures } = await withFailingCommand(
      stack.redis,
      'del',
      () => postLogout(browser, stack.appUrl),
      firstOnly((args) => String(args[0]).startsWith(stack.sessionPrefix)),
    );
    expect(failed.status).toBe(503);
    expect(failed.body).toContain('session_unavailable');
    expect(failures).toBe(1);
    expect((await me(browser, stack.appUrl)).status).toBe(200);

    // The provider's back-channel logout still finds the session and ends it.
    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }));
    expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);
    expect((await me(browser, stack.appUrl)).status).toBe(401);
  });
});

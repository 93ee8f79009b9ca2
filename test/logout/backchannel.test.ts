import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { RedisStore } from 'connect-redis';
import type { SessionData } from 'express-session';
import type { Redis } from 'ioredis';
import type { AuthOptions } from '../../lib/index.js';
import { buildApp, CLIENT_ID, CLIENT_SECRET, connectRedis, listen, sessionCookie, type Listener } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startProvider, type TestProvider } from '../helpers/provider.js';
import { spawnAppProcess, type AppProcess } from './process.js';
import {
  duringTokenWrite,
  endSessionAtProvider,
  logoutClaims,
  logoutProviderConfiguration,
  me,
  sendLogoutToken,
  sessionIdOf,
  signLogoutToken,
  storedSession,
  firstOnly,
  withFailingCommand,
} from './support.js';

// Two real app processes behind one "load balancer": A runs in this test process, B is a child process. They share
// Redis (sessions and the logout index) and the provider. The provider's back-channel calls reach B only.
let provider: TestProvider;
let appA: Listener;
let appB: AppProcess;
let redis: Redis;
let storeA: PausingStore;
const sessionPrefix = `test:${randomUUID()}:sess:`;
const keyPrefix = `test:${randomUUID()}:`;

/**
 * A's session store, which can run a hook just before a login's session is written: the callback's own save (the
 * first, between index and save) or express-session's save as the response ends (the second).
 */
class PausingStore extends RedisStore {
  #hook: { write: number; run: (sessionId: string, session: SessionData) => Promise<void> } | undefined;
  readonly #writes = new Map<string, number>();
  #written: () => void = () => undefined;
  /** Resolves once the write that ran the hook has reached Redis. */
  hookedWrite: Promise<void> = Promise.resolve();

  /** Runs `run` once, just before the `write`th write of a login's session from now on (1: the callback's, 2: the end's). */
  beforeLoginWrite(write: number, run: (sessionId: string, session: SessionData) => Promise<void>): void {
    this.#writes.clear();
    this.#hook = { write, run };
    this.hookedWrite = new Promise((resolve) => (this.#written = resolve));
  }

  get hookPending(): boolean {
    return this.#hook !== undefined;
  }

  override async set(sid: string, sess: SessionData, cb?: (err?: unknown) => void): Promise<unknown> {
    const hook = this.#hook;
    if (hook !== undefined && (sess as { oauth?: { login?: unknown } }).oauth?.login !== undefined) {
      const write = (this.#writes.get(sid) ?? 0) + 1;
      this.#writes.set(sid, write);
      if (write === hook.write) {
        this.#hook = undefined;
        await hook.run(sid, sess);
        const result: unknown = await super.set(sid, sess, cb);
        this.#written();
        return result;
      }
    }
    return super.set(sid, sess, cb);
  }
}

beforeAll(async () => {
  appA = await listen();
  appB = await spawnAppProcess();
  provider = await startProvider({
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [`${appA.url}/callback`, `${appB.url}/callback`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
        backchannel_logout_uri: `${appB.url}/backchannel-logout`,
        backchannel_logout_session_required: true,
      },
    ],
    configuration: logoutProviderConfiguration,
  });
  redis = connectRedis();
  const shared: Omit<AuthOptions, 'redis' | 'redirectUri'> = {
    issuer: provider.issuer,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    allowInsecureRequests: true,
    scope: 'openid email',
    keyPrefix,
  };
  storeA = new PausingStore({ client: redis, prefix: sessionPrefix });
  appA.handle(buildApp({ redis, sessionPrefix, session: { store: storeA }, auth: { ...shared, redirectUri: `${appA.url}/callback`, redis } }));
  await appB.start({ sessionPrefix, auth: { ...shared, redirectUri: `${appB.url}/callback` } });
}, 30_000);

afterAll(async () => {
  await appB?.stop();
  await appA?.close();
  await provider?.close();
  redis?.disconnect();
});

async function loginVia(appUrl: string, login: string): Promise<Browser> {
  const browser = new Browser();
  const result = await browser.login(`${appUrl}/login?returnTo=/me`, { login });
  expect(result.status).toBe(200);
  return browser;
}

function cookieOf(browser: Browser): string {
  // Both apps listen on 127.0.0.1: one cookie serves both, as behind a load balancer.
  const value = sessionCookie(browser, appA.url);
  if (value === undefined) throw new Error('no session cookie');
  return value;
}

/** What {@link logoutBeforeLastWrite} saw: the login and session it logged out, and the logout's answer. */
interface LastWriteLogout {
  loginId?: string;
  sessionId?: string;
  status?: number;
}

/**
 * Sends `appUrl` a logout of the login A is saving, just before express-session's last write of its session (after the
 * callback's own checks); what it saw is filled in as it runs.
 */
function logoutBeforeLastWrite(appUrl: string): LastWriteLogout {
  const seen: LastWriteLogout = {};
  storeA.beforeLoginWrite(2, async (id, saved) => {
    const login = (saved as unknown as { oauth: { login: { id: string; claims: { sid: string; sub: string } } } }).oauth.login;
    seen.loginId = login.id;
    seen.sessionId = id;
    const token = await signLogoutToken(provider, logoutClaims(provider.issuer, { sid: login.claims.sid, sub: login.claims.sub }));
    seen.status = (await sendLogoutToken(appUrl, token)).status;
  });
  return seen;
}

/** Waits for the callback's check after express-session's last write: until the session is gone, or about a second. */
async function afterLastWrite(sessionId: string | undefined): Promise<void> {
  await storeA.hookedWrite;
  for (let i = 0; i < 50 && (await redis.exists(`${sessionPrefix}${String(sessionId)}`)) === 1; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('back-channel logout across two app processes', () => {
  test("the provider's own back-channel call, after its end-session flow, logs the user out of both processes", async () => {
    // Logged in through A (the index is written by this process); the back-channel call goes to B.
    const alice = await loginVia(appA.url, 'alice');
    // The same user in another browser: another OP session, another sid.
    const aliceElsewhere = await loginVia(appB.url, 'alice');
    const bob = await loginVia(appB.url, 'bob');
    for (const browser of [alice, aliceElsewhere, bob]) {
      expect((await me(browser, appA.url)).status).toBe(200);
      expect((await me(browser, appB.url)).status).toBe(200);
    }
    const before = provider.count('backchannel.success');
    const loginIdOf = async (browser: Browser) =>
      ((await storedSession(redis, sessionPrefix, cookieOf(browser)))?.oauth as { login: { id: string } }).login.id;
    const tokenRecord = async (loginId: string) => JSON.parse((await redis.get(`${keyPrefix}tokens:${loginId}`)) ?? 'null');
    const aliceLogin = await loginIdOf(alice);
    const elsewhereLogin = await loginIdOf(aliceElsewhere);
    expect(await tokenRecord(aliceLogin)).toMatchObject({ v: 1, tokens: { refreshToken: expect.any(String) } });

    const ended = await endSessionAtProvider(alice, provider.issuer);

    expect(ended.status).toBe(303);
    expect(provider.count('backchannel.error')).toBe(0);
    expect(provider.count('backchannel.success')).toBe(before + 1);
    // Refused on its very next request, on either process, though the browser still presents its cookie.
    expect((await me(alice, appA.url)).status).toBe(401);
    expect((await me(alice, appB.url)).status).toBe(401);
    expect(await storedSession(redis, sessionPrefix, cookieOf(alice))).toBeNull();
    // Her login is ended in the token store too (its refresh token gone): no process can refresh it again, even from
    // a stale copy of the session that a request in flight might save back.
    expect(await tokenRecord(aliceLogin)).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
    expect(await tokenRecord(elsewhereLogin)).toMatchObject({ v: 1, tokens: { accessToken: expect.any(String) } });
    // The logout token named alice's OP session (sid): her other browser and bob stay logged in.
    expect((await me(aliceElsewhere, appA.url)).status).toBe(200);
    expect((await me(bob, appA.url)).status).toBe(200);
    expect((await me(bob, appB.url)).status).toBe(200);
  });

  test('a logout token naming only the user (sub) ends every session of that user, logged in on either process', async () => {
    const first = await loginVia(appA.url, 'carol');
    const second = await loginVia(appB.url, 'carol');
    const bob = await loginVia(appA.url, 'bob');
    const token = await signLogoutToken(provider, logoutClaims(provider.issuer, { sub: 'carol' }));

    const response = await sendLogoutToken(appA.url, token);

    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    for (const browser of [first, second]) {
      expect((await me(browser, appA.url)).status).toBe(401);
      expect((await me(browser, appB.url)).status).toBe(401);
    }
    expect((await me(bob, appB.url)).status).toBe(200);
    // The index forgot the destroyed sessions.
    const subKeys = await redis.keys(`*logout:sub:*`);
    const members = await Promise.all(subKeys.map((key) => redis.smembers(key)));
    const carolIds = [first, second].map((b) => sessionIdOf(cookieOf(b)));
    expect(members.flat()).not.toEqual(expect.arrayContaining([carolIds[0]]));
    expect(members.flat()).not.toEqual(expect.arrayContaining([carolIds[1]]));
  });

  test('a logout arriving after the callback indexed a login but before it saved the session ends that login', async () => {
    let loginId: string | undefined;
    let logoutStatus: number | undefined;
    // The provider's logout reaches the other process while this one's callback has indexed the login and not yet
    // written its session: there is nothing in the store to destroy yet.
    storeA.beforeLoginWrite(1, async (_sessionId, saved) => {
      const login = (saved as unknown as { oauth: { login: { id: string; claims: { sid: string; sub: string } } } }).oauth.login;
      loginId = login.id;
      const token = await signLogoutToken(provider, logoutClaims(provider.issuer, { sid: login.claims.sid, sub: login.claims.sub }));
      logoutStatus = (await sendLogoutToken(appB.url, token)).status;
    });
    const browser = new Browser();

    const result = await browser.login(`${appA.url}/login?returnTo=/me`, { login: 'frank' });

    expect(storeA.hookPending).toBe(false);
    expect(logoutStatus).toBe(200);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
    expect((await me(browser, appA.url)).status).toBe(401);
    expect((await me(browser, appB.url)).status).toBe(401);
    // Ended in the token store as well: a copy of that session could never be refreshed.
    expect(JSON.parse((await redis.get(`${keyPrefix}tokens:${String(loginId)}`)) ?? 'null')).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
    // A login that no logout overtakes is unaffected.
    const later = await loginVia(appA.url, 'frank');
    expect((await me(later, appB.url)).status).toBe(200);
  });

  test('a logout that finds the indexed login before its session is saved ends it, even when its token is older than the login', async () => {
    // A token issued 30 s before this login (a late delivery or a retry): the OP-session and user marks spare a login
    // that new, so only the mark on the session id the index gave the logout can end it.
    let logoutStatus: number | undefined;
    storeA.beforeLoginWrite(1, async (_sessionId, saved) => {
      const login = (saved as unknown as { oauth: { login: { claims: { sid: string; sub: string } } } }).oauth.login;
      const iat = Math.floor(Date.now() / 1000) - 30;
      const token = await signLogoutToken(provider, { ...logoutClaims(provider.issuer, { sid: login.claims.sid, sub: login.claims.sub }), iat, exp: iat + 120 });
      logoutStatus = (await sendLogoutToken(appB.url, token)).status;
    });
    const browser = new Browser();

    const result = await browser.login(`${appA.url}/login?returnTo=/me`, { login: 'ivan' });

    expect(storeA.hookPending).toBe(false);
    expect(logoutStatus).toBe(200);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
    expect((await me(browser, appA.url)).status).toBe(401);
  });

  test("a logout landing between the callback's save and express-session's own save at the end does not leave the login alive", async () => {
    // The logout finds the login saved, ends it and destroys the session, which express-session's last write then
    // brings back.
    const logout = logoutBeforeLastWrite(appB.url);

    await new Browser().login(`${appA.url}/login?returnTo=/me`, { login: 'heidi' });

    expect(storeA.hookPending).toBe(false);
    expect(logout.status).toBe(200);
    await afterLastWrite(logout.sessionId);
    // The session that write brought back is gone again. (The browser itself may have logged in anew meanwhile: its
    // redirect to /me can find the session gone and go through the provider's still-open session.)
    expect(await redis.exists(`${sessionPrefix}${String(logout.sessionId)}`)).toBe(0);
    expect(JSON.parse((await redis.get(`${keyPrefix}tokens:${String(logout.loginId)}`)) ?? 'null')).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
  });

  test("when that logout fails to end the login (its tombstone write fails), the check after express-session's last save ends it", async () => {
    // This time the logout comes to this process and marks the session ended, then its tombstone write fails (503,
    // nothing destroyed: the provider would retry). The callback's own check after that write is then all that stands
    // between the login and a session that lives on.
    const logout = logoutBeforeLastWrite(appA.url);
    const { failures } = await withFailingCommand(
      redis,
      'eval',
      async () => {
        await new Browser().login(`${appA.url}/login?returnTo=/me`, { login: 'ivan' });
        await afterLastWrite(logout.sessionId);
      },
      // The first tombstone write for a login fails; the next goes through.
      firstOnly((args) => String(args[2]).startsWith(`${keyPrefix}tokens:`)),
    );

    expect(storeA.hookPending).toBe(false);
    expect(failures).toBe(1);
    expect(logout.status).toBe(503);
    expect(await redis.exists(`${sessionPrefix}${String(logout.sessionId)}`)).toBe(0);
    expect(JSON.parse((await redis.get(`${keyPrefix}tokens:${String(logout.loginId)}`)) ?? 'null')).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
  });

  test("the check after express-session's last save runs even when the browser has gone away meanwhile", async () => {
    let sessionId: string | undefined;
    const aborted = new AbortController();
    // The logout comes just before express-session's last write, and the browser drops the connection at that moment:
    // no 'finish' event will come for that response.
    storeA.beforeLoginWrite(2, async (id, saved) => {
      sessionId = id;
      const login = (saved as unknown as { oauth: { login: { claims: { sid: string; sub: string } } } }).oauth.login;
      const token = await signLogoutToken(provider, logoutClaims(provider.issuer, { sid: login.claims.sid, sub: login.claims.sub }));
      expect((await sendLogoutToken(appB.url, token)).status).toBe(200);
      aborted.abort();
      await new Promise((resolve) => setTimeout(resolve, 50));
    });
    const browser = new Browser();
    const pending = await browser.login(`${appA.url}/login?returnTo=/me`, { login: 'judy', stopAtCallback: (url) => url.pathname === '/callback' });
    const callbackUrl = new URL(pending.steps.at(-1)!.location!);

    // express-session sends the headers before its last write; the body never completes.
    const request = fetch(callbackUrl, { headers: { cookie: browser.cookieHeader(callbackUrl) }, redirect: 'manual', signal: aborted.signal });
    await expect(request.then(async (answer) => answer.arrayBuffer())).rejects.toThrow();

    expect(storeA.hookPending).toBe(false);
    // express-session's last write has brought the session back; the check after it must remove it again.
    await afterLastWrite(sessionId);
    expect(await redis.exists(`${sessionPrefix}${String(sessionId)}`)).toBe(0);
  });

  test('a logout that marks before the callback saves, but reads the store only after the login completed, still ends the login', async () => {
    // The logout's mark is held in Redis's way until the login has completed; the logout then reads the store, which by
    // now holds the login: it must end it (tombstone) and destroy the session, as for any login it finds.
    const set = redis.set.bind(redis);
    let markReached!: () => void;
    const reached = new Promise<void>((resolve) => (markReached = resolve));
    let releaseMark!: () => void;
    const released = new Promise<void>((resolve) => (releaseMark = resolve));
    (redis as unknown as { set: (...args: unknown[]) => Promise<unknown> }).set = async (...args: unknown[]) => {
      if (String(args[0]).includes('logout:ended:')) {
        markReached();
        await released;
      }
      return (set as (...a: unknown[]) => Promise<unknown>)(...args);
    };
    let loginId: string | undefined;
    let sessionId: string | undefined;
    let logout: Promise<Response> | undefined;
    storeA.beforeLoginWrite(1, async (id, saved) => {
      const login = (saved as unknown as { oauth: { login: { id: string; claims: { sub: string } } } }).oauth.login;
      loginId = login.id;
      sessionId = id;
      // Issued before this login's ID token, so that the user's mark does not end the login at its callback: what is
      // held is the session's own mark, after the lookup found the login.
      const claims = { ...logoutClaims(provider.issuer, { sub: login.claims.sub }), iat: Math.floor(Date.now() / 1000) - 5 };
      logout = sendLogoutToken(appA.url, await signLogoutToken(provider, claims));
      await reached;
    });
    try {
      const browser = new Browser();
      expect((await browser.login(`${appA.url}/login?returnTo=/me`, { login: 'ivan' })).status).toBe(200);
      releaseMark();
      expect((await logout!).status).toBe(200);
    } finally {
      releaseMark();
      delete (redis as { set?: unknown }).set;
    }
    expect(await redis.exists(`${sessionPrefix}${String(sessionId)}`)).toBe(0);
    expect(JSON.parse((await redis.get(`${keyPrefix}tokens:${String(loginId)}`)) ?? 'null')).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
  });

  test('a logout of the OP session that arrives before the callback has indexed the login still ends it', async () => {
    // The logout comes while the callback stores the login's tokens, before it writes the index: the lookup finds
    // nothing. The OP session's mark, written before the lookup, is what the callback finds.
    let logoutStatus: number | undefined;
    const browser = new Browser();
    const { result, ran } = await duringTokenWrite(
      redis,
      keyPrefix,
      () => browser.login(`${appA.url}/login?returnTo=/me`, { login: 'karl' }),
      async ({ sid, sub }) => {
        const token = await signLogoutToken(provider, logoutClaims(provider.issuer, { ...(sid === undefined ? {} : { sid }), sub }));
        logoutStatus = (await sendLogoutToken(appB.url, token)).status;
      },
    );

    expect(ran).toBe(true);
    expect(logoutStatus).toBe(200);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
    expect((await me(browser, appA.url)).status).toBe(401);
  });

  test('a logout of the user (sub only) that arrives before the callback has indexed the login still ends it', async () => {
    // As above, with a logout token that names the user alone: the user's mark is what the callback finds.
    let logoutStatus: number | undefined;
    const browser = new Browser();
    const { result, ran } = await duringTokenWrite(
      redis,
      keyPrefix,
      () => browser.login(`${appA.url}/login?returnTo=/me`, { login: 'lena' }),
      async ({ sub }) => {
        logoutStatus = (await sendLogoutToken(appB.url, await signLogoutToken(provider, logoutClaims(provider.issuer, { sub })))).status;
      },
    );

    expect(ran).toBe(true);
    expect(logoutStatus).toBe(200);
    expect(result.status).toBe(401);
    expect(result.body).toContain('login_required');
    expect((await me(browser, appA.url)).status).toBe(401);
  });

  test('a login newer than a logout of its user stands, and a logout of the user spares other users', async () => {
    const first = await loginVia(appA.url, 'mona');
    const bystander = await loginVia(appA.url, 'nils');
    const session = await storedSession(redis, sessionPrefix, cookieOf(first));
    const { sub } = (session?.oauth as { login: { claims: { sub: string } } }).login.claims;
    const earlier = { ...logoutClaims(provider.issuer, { sub }), iat: Math.floor(Date.now() / 1000) - 5 };
    expect((await sendLogoutToken(appB.url, await signLogoutToken(provider, earlier))).status).toBe(200);
    expect((await me(first, appA.url)).status).toBe(401);

    // The user's mark is there for ten minutes; a new login, with a newer ID token, is not refused by it.
    const again = await first.login(`${appA.url}/login?returnTo=/me`, { login: 'mona' });
    expect(again.status).toBe(200);
    expect((await me(first, appA.url)).status).toBe(200);
    // Nor is another user's.
    expect((await me(bystander, appA.url)).status).toBe(200);
    const other = await loginVia(appA.url, 'nils');
    expect((await me(other, appA.url)).status).toBe(200);
  });

  test("a login newer than a logout of its OP session stands (a server that logged the user out of this client alone)", async () => {
    // The OP session's mark names the logout's iat; an ID token issued after it belongs to a later login.
    const first = await loginVia(appA.url, 'liam');
    const session = await storedSession(redis, sessionPrefix, cookieOf(first));
    const claims = (session?.oauth as { login: { claims: { sid: string; sub: string } } }).login.claims;
    const earlier = { ...logoutClaims(provider.issuer, { sid: claims.sid, sub: claims.sub }), iat: Math.floor(Date.now() / 1000) - 5 };
    expect((await sendLogoutToken(appB.url, await signLogoutToken(provider, earlier))).status).toBe(200);
    expect((await me(first, appA.url)).status).toBe(401);

    // The same OP session (its cookie at the provider is still there), a new login: a newer ID token.
    const again = await first.login(`${appA.url}/login?returnTo=/me`, { login: 'liam' });

    expect(again.status).toBe(200);
    expect((await me(first, appA.url)).status).toBe(200);
  });

  test('when Redis cannot say whether a logout overtook the login, the login is not completed and its session is gone', async () => {
    let sessionId: string | undefined;
    storeA.beforeLoginWrite(1, async (id) => {
      sessionId = id;
      // Redis fails for the callback's check only (after its save): the one failure that this check adds.
      redis.exists = (async () => {
        throw new Error('Connection is closed.');
      }) as unknown as Redis['exists'];
    });
    const browser = new Browser();
    let result: Awaited<ReturnType<Browser['login']>>;
    try {
      result = await browser.login(`${appA.url}/login?returnTo=/me`, { login: 'grace' });
    } finally {
      delete (redis as { exists?: unknown }).exists;
    }

    expect(result.status).toBe(503);
    expect(result.body).toContain('session_unavailable');
    expect(await redis.exists(`${sessionPrefix}${String(sessionId)}`)).toBe(0);
    expect((await me(browser, appA.url)).status).toBe(401);
  });

  test('a logout token with sid and sub ends only the sessions indexed under both', async () => {
    const dave = await loginVia(appB.url, 'dave');
    const session = await storedSession(redis, sessionPrefix, cookieOf(dave));
    const sid = (session?.oauth as { login: { claims: { sid: string } } }).login.claims.sid;
    expect(typeof sid).toBe('string');

    // Another user's sub with dave's sid matches nothing.
    const mismatched = await signLogoutToken(provider, logoutClaims(provider.issuer, { sub: 'erin', sid }));
    expect((await sendLogoutToken(appB.url, mismatched)).status).toBe(200);
    expect((await me(dave, appA.url)).status).toBe(200);

    // Dave's sub with another OP session's sid leaves this session, which recorded its own sid, alone.
    // Its iat a little ahead (within clockTolerance), so that the marks it leaves would catch any login made now.
    const ahead = { ...logoutClaims(provider.issuer, { sub: 'dave', sid: `${sid}-other` }), iat: Math.floor(Date.now() / 1000) + 10 };
    expect((await sendLogoutToken(appB.url, await signLogoutToken(provider, ahead))).status).toBe(200);
    expect((await me(dave, appA.url)).status).toBe(200);
    // Nor does it mark dave's logins of other OP sessions: a new one, made now, stands.
    expect((await me(await loginVia(appA.url, 'dave'), appA.url)).status).toBe(200);

    const matching = await signLogoutToken(provider, logoutClaims(provider.issuer, { sub: 'dave', sid }));
    expect((await sendLogoutToken(appB.url, matching)).status).toBe(200);
    expect((await me(dave, appA.url)).status).toBe(401);
  });
});

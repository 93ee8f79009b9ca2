import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { CLIENT_ID, CLIENT_SECRET, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import {
  ACCESS_TOKEN_TTL,
  expectLastRefreshRevoked,
  expectLoginEnded,
  getJson,
  inMode,
  installTokenStub,
  readLogin,
  readRecord,
  readSession,
  refreshErrors,
  refreshedTokens,
  refreshGrants,
  startRefreshStack,
  tokenKey,
  userinfoStatus,
  waitUntilDue,
  type TokenStub,
} from './support.js';

// Lets a test hold `/api/slow-write` between loading the session and saving it.
let releaseSlowWrite: (() => void) | undefined;
let slowWriteGate: Promise<void> = Promise.resolve();

let stack: Stack;
let stub: TokenStub;

beforeAll(async () => {
  // ID tokens carry auth_time (require_auth_time), which a refreshed one must keep (OpenID Connect Core §12.2).
  stack = await startRefreshStack({}, { slowWrite: () => slowWriteGate }, { require_auth_time: true });
  stub = installTokenStub(stack.provider);
});
afterAll(async () => stack.close());

async function login(): Promise<Browser> {
  const browser = new Browser();
  const result = await browser.login(`${stack.appUrl}/login?returnTo=/me`);
  expect(result.status).toBe(200);
  return browser;
}

function revocations(): number {
  return stack.provider.count('grant.revoked');
}

/**
 * 100 concurrent calls of `call`, while refreshed tokens live a minute: on a loaded machine the burst could otherwise
 * outlast the refreshed token's 2–3 usable seconds, and its last calls would rightly refresh again.
 */
async function burst<T>(call: () => Promise<T>): Promise<T[]> {
  refreshedTokens.ttl = 60;
  try {
    return await Promise.all(Array.from({ length: 100 }, call));
  } finally {
    refreshedTokens.ttl = ACCESS_TOKEN_TTL;
  }
}

describe('refresh on expiry (one process, Redis)', () => {
  test('100 concurrent getAccessToken() calls cause exactly one refresh grant and all get the same new token', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ v: 1 });
    const grants = refreshGrants(stack.provider);
    const revoked = revocations();
    await waitUntilDue(before.tokens);

    const results = await burst(() => getJson(browser, `${stack.appUrl}/api/token`));

    expect(results.map((r) => r.status)).toEqual(Array(100).fill(200));
    const tokens = new Set(results.map((r) => r.body.accessToken));
    expect(tokens.size).toBe(1);
    const [fresh] = [...tokens] as string[];
    expect(fresh).not.toBe(before.tokens.accessToken);
    expect(refreshGrants(stack.provider) - grants).toBe(1);
    expect(revocations()).toBe(revoked);
    // The grant survives: the new token works at the provider, and the store holds version 2 with a rotated refresh token.
    expect(await userinfoStatus(stack.provider, fresh!)).toBe(200);
    const record = await readRecord(stack.redis, tokenKey(stack, before.id));
    expect(record?.v).toBe(2);
    expect(record?.tokens?.accessToken).toBe(fresh);
    expect(record?.tokens?.refreshToken).toBeDefined();
    expect(record?.tokens?.refreshToken).not.toBe(before.tokens.refreshToken);
    expect(await stack.redis.ttl(tokenKey(stack, before.id))).toBeGreaterThan(0);
    // The session copy followed, and the refreshed ID token's claims replaced the old ones.
    const after = await readLogin(stack, browser);
    expect(after.version).toBe(2);
    expect(after.tokens.accessToken).toBe(fresh);
    expect(after.claims?.sub).toBe(before.claims?.sub);
    expect(after.claims?.iat).not.toBeUndefined();
    expect(Number(after.claims?.iat)).toBeGreaterThan(Number(before.claims?.iat));
  });

  test('a second expiry refreshes again, with the rotated refresh token', async () => {
    const browser = await login();
    const first = await readLogin(stack, browser);
    const grants = refreshGrants(stack.provider);
    const revoked = revocations();

    await waitUntilDue(first.tokens);
    const second = await getJson(browser, `${stack.appUrl}/api/token`);
    expect(second.status).toBe(200);
    const afterFirst = await readLogin(stack, browser);
    // Until due again, the session copy is served as is.
    expect((await getJson(browser, `${stack.appUrl}/api/token`)).body.accessToken).toBe(second.body.accessToken);

    await waitUntilDue(afterFirst.tokens);
    const third = await getJson(browser, `${stack.appUrl}/api/token`);

    expect(third.status).toBe(200);
    expect(third.body.accessToken).not.toBe(second.body.accessToken);
    expect(refreshGrants(stack.provider) - grants).toBe(2);
    // Reusing the first (consumed) refresh token would have revoked the grant.
    expect(revocations()).toBe(revoked);
    expect(await userinfoStatus(stack.provider, String(third.body.accessToken))).toBe(200);
    const record = await readRecord(stack.redis, tokenKey(stack, first.id));
    expect(record?.v).toBe(3);
    expect(record?.tokens?.refreshToken).not.toBe(afterFirst.tokens.refreshToken);
  });

  test.each([
    ['a relative URL', '/relative/path'],
    ['a scheme fetch would refuse', 'ftp://127.0.0.1:9/orders'],
  ])("req.auth.fetch() refuses the app's mistake (%s) before it refreshes a due token (nothing is sent, nothing rotated)", async (_name, url) => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    const grants = refreshGrants(stack.provider);
    await waitUntilDue(before.tokens);

    const refused = await getJson(browser, `${stack.appUrl}/api/fetch?url=${encodeURIComponent(url)}`);

    expect(refused.status).toBe(500);
    expect(refused.body.error).toBe('misconfigured');
    expect(refreshGrants(stack.provider)).toBe(grants);
    expect((await readLogin(stack, browser)).tokens.accessToken).toBe(before.tokens.accessToken);
  });

  test('a concurrent request that saves a stale session does not undo the refresh', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    const grants = refreshGrants(stack.provider);
    const revoked = revocations();
    await waitUntilDue(before.tokens);

    slowWriteGate = new Promise<void>((resolve) => (releaseSlowWrite = resolve));
    // Loads the session (expired tokens, version 1) now, saves it after the refresh below.
    const slow = getJson(browser, `${stack.appUrl}/api/slow-write`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const refreshed = await getJson(browser, `${stack.appUrl}/api/token`);
    expect(refreshed.status).toBe(200);
    expect((await readLogin(stack, browser)).version).toBe(2);
    releaseSlowWrite?.();
    expect((await slow).status).toBe(200);
    slowWriteGate = Promise.resolve();

    // The stale save did happen: the session holds version 1 again, with the consumed refresh token.
    const stale = await readSession(stack, browser);
    expect(stale.lastVisit).toBeDefined();
    expect(stale.oauth?.login?.version ?? 1).toBe(1);
    expect(stale.oauth?.login?.tokens.accessToken).toBe(before.tokens.accessToken);

    const next = await getJson(browser, `${stack.appUrl}/api/token`);

    expect(next.status).toBe(200);
    expect(next.body.accessToken).toBe(refreshed.body.accessToken);
    expect(refreshGrants(stack.provider) - grants).toBe(1);
    expect(revocations()).toBe(revoked);
    // And the session copy is repaired from the store.
    expect((await readLogin(stack, browser)).version).toBe(2);
  });

  test('a revoked grant (refresh-token reuse detected) gives 401 login_required and a logged-out session', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    const revoked = revocations();
    // Someone replays the refresh token: the first use rotates it, the second (a consumed token) revokes the grant.
    const replay = async () =>
      fetch(`${stack.provider.issuer}/token`, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`,
        },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: String(before.tokens.refreshToken) }),
      });
    expect((await replay()).status).toBe(200);
    expect((await replay()).status).toBe(400);
    expect(revocations()).toBe(revoked + 1);

    const errors = refreshErrors(stack.provider);
    const result = await getJson(browser, `${stack.appUrl}/api/refresh`);

    expect(result.status).toBe(401);
    expect(result.body).toMatchObject({ error: 'login_required', upstream_error: 'invalid_grant' });
    expect(refreshErrors(stack.provider) - errors).toBe(1);
    const session = await readSession(stack, browser);
    expect(session.oauth?.login).toBeUndefined();
    expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ ended: true });
    expect(await stack.redis.ttl(tokenKey(stack, before.id))).toBeGreaterThan(0);
    // requireAuth() now treats the user as logged out.
    expect((await getJson(browser, `${stack.appUrl}/me`)).status).toBe(401);
    expect((await getJson(browser, `${stack.appUrl}/api/token`)).body).toMatchObject({ error: 'login_required' });
    // Nothing more was asked of the token endpoint.
    expect(refreshErrors(stack.provider) - errors).toBe(1);
  });

  test('a token endpoint answering 500 gives 503 refresh_failed and keeps the login; a later call succeeds', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    const grants = refreshGrants(stack.provider);

    const failed = await inMode(stub, 'fail500', () => getJson(browser, `${stack.appUrl}/api/refresh`));

    expect(failed.status).toBe(503);
    expect(failed.body).toMatchObject({ error: 'refresh_failed', status: 503 });
    expect(String(failed.body.error_description)).toMatch(/HTTP 500/);
    expect(JSON.stringify(failed.body)).not.toContain(String(before.tokens.refreshToken));
    const kept = await readLogin(stack, browser);
    expect(kept.id).toBe(before.id);
    expect(kept.tokens.refreshToken).toBe(before.tokens.refreshToken);
    expect(await readRecord(stack.redis, tokenKey(stack, before.id))).toMatchObject({ v: 1 });
    expect((await getJson(browser, `${stack.appUrl}/me`)).status).toBe(200);

    const retried = await getJson(browser, `${stack.appUrl}/api/refresh`);
    expect(retried.status).toBe(200);
    expect(retried.body.accessToken).not.toBe(before.tokens.accessToken);
    expect(refreshGrants(stack.provider) - grants).toBe(1);
  });

  test('a refresh the server refuses to this client (401 Basic challenge) keeps the login: 502 refresh_failed, naming the client', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);

    const failed = await inMode(stub, 'clientRefused', () => getJson(browser, `${stack.appUrl}/api/refresh`));

    expect(failed.status).toBe(502);
    expect(failed.body).toMatchObject({ error: 'refresh_failed', status: 502, upstream_error: 'invalid_client' });
    expect(String(failed.body.error_description)).toMatch(/refused this client \(invalid_client\)/);
    expect((await readLogin(stack, browser)).id).toBe(before.id);
    expect((await getJson(browser, `${stack.appUrl}/me`)).status).toBe(200);
  });

  test('a refreshed ID token naming another subject ends the login (OpenID Connect Core §12.2)', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);

    const result = await inMode(stub, 'swapSub', () => getJson(browser, `${stack.appUrl}/api/refresh`));

    await expectLoginEnded(stack, browser, before.id, result, /sub/);
    // The tokens of the answer it refused are held by nobody: revoked, not left alive at the provider.
    await expectLastRefreshRevoked(stack.provider);
  });

  test.each([
    ['another auth_time (not the original authentication)', (claims: Record<string, unknown>) => ({ ...claims, auth_time: Number(claims.auth_time) - 3600 }), /auth_time/],
    ['an azp the first one did not have', (claims: Record<string, unknown>) => ({ ...claims, azp: claims.aud }), /azp/],
    // The nonce of another login (an ID token replayed from it), when the refreshed one carries a nonce at all.
    ['a nonce that is not the original one', (claims: Record<string, unknown>) => ({ ...claims, nonce: 'nonce-of-another-login' }), /nonce/],
    // An earlier ID token of the same login, replayed: §12.2 wants the refreshed one's iat to be its own issue time.
    ['an iat older than the ID token it replaces', (claims: Record<string, unknown>) => ({ ...claims, iat: Number(claims.iat) - 600 }), /issued before the one it replaces/],
  ])('a refreshed ID token with %s ends the login (OpenID Connect Core §12.2)', async (_case, reclaim, reason) => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    expect(before.claims?.auth_time).toEqual(expect.any(Number));
    expect(before.claims?.nonce).toEqual(expect.any(String));
    expect(before.claims).not.toHaveProperty('azp');

    stub.reclaim = reclaim;
    const result = await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`));

    await expectLoginEnded(stack, browser, before.id, result, reason);
    await expectLastRefreshRevoked(stack.provider);
  });

  test.each([
    ['an aud without this client', (claims: Record<string, unknown>) => ({ ...claims, aud: 'someone-else' })],
    ['an expired exp', (claims: Record<string, unknown>) => ({ ...claims, exp: Math.floor(Date.now() / 1000) - 3600 })],
  ])('a refreshed ID token openid-client refuses inside the grant (%s) ends the login, and the tokens of that answer are revoked', async (_case, reclaim) => {
    const browser = await login();
    const before = await readLogin(stack, browser);

    stub.reclaim = reclaim;
    let result: { status: number; body: Record<string, unknown> };
    try {
      result = await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`));
    } finally {
      stub.reclaim = (claims) => claims;
    }

    await expectLoginEnded(stack, browser, before.id, result, /ID token/);
    await expectLastRefreshRevoked(stack.provider);
  });

  test('a refresh answer without an access token: 502 refresh_failed, the refresh token it rotated to is revoked, and the login ends at its next use', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    const result = await inMode(stub, 'dropAccessToken', () => getJson(browser, `${stack.appUrl}/api/refresh`));
    expect(result).toMatchObject({ status: 502, body: { error: 'refresh_failed' } });
    // Nobody holds the rotated refresh token: left alive, it would be a grant no client knows of.
    await expectLastRefreshRevoked(stack.provider);
    // The login's own refresh token was spent by that rotation: the next use ends the login instead of serving it.
    const next = await getJson(browser, `${stack.appUrl}/api/refresh`);
    await expectLoginEnded(stack, browser, before.id, next, /invalid_grant/);
  });

  test('a refreshed ID token issued a little before the one it replaces, within clockTolerance (another server node), is accepted', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    // 10 s older than the login's ID token: a replay only beyond the default 30 s tolerance.
    stub.reclaim = (claims) => ({ ...claims, iat: Number(before.claims?.iat) - 10 });
    let result: { status: number; body: Record<string, unknown> };
    try {
      result = await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`));
    } finally {
      stub.reclaim = (claims) => claims;
    }

    expect(result.status).toBe(200);
    const after = await readLogin(stack, browser);
    expect(after.version).toBe((before.version ?? 1) + 1);
    expect(after.claims?.iat).toBe(Number(before.claims?.iat) - 10);
  });

  test('a refreshed ID token with fewer audiences than the first one ends the login (OpenID Connect Core §12.2)', async () => {
    // The login's own ID token names a second audience (with azp = this client, so openid-client accepts it).
    stub.reclaim = (claims) => ({ ...claims, aud: [CLIENT_ID, 'https://api.example.com'], azp: CLIENT_ID });
    const browser = await inMode(stub, 'reclaim', () => login());
    const before = await readLogin(stack, browser);
    expect(before.claims).toMatchObject({ aud: [CLIENT_ID, 'https://api.example.com'], azp: CLIENT_ID });

    // The refreshed one keeps iss, sub, azp and auth_time, and drops that audience: valid on its own, but another login's.
    stub.reclaim = (claims) => ({ ...claims, aud: CLIENT_ID, azp: CLIENT_ID });
    let result: { status: number; body: Record<string, unknown> };
    try {
      result = await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`));
    } finally {
      stub.reclaim = (claims) => claims;
    }

    await expectLoginEnded(stack, browser, before.id, result, /\(aud changed/);
    // Nobody holds the refused answer's tokens.
    await expectLastRefreshRevoked(stack.provider);
  });

  test('a refreshed ID token without auth_time keeps the original one, so the next refresh is still checked against it', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);

    stub.reclaim = ({ auth_time: _left, ...claims }) => claims;
    expect((await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`))).status).toBe(200);
    expect((await readLogin(stack, browser)).claims?.auth_time).toBe(before.claims?.auth_time);

    stub.reclaim = (claims) => ({ ...claims, auth_time: Number(claims.auth_time) - 3600 });
    const result = await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`));
    await expectLoginEnded(stack, browser, before.id, result, /auth_time/);
  });

  test('a refreshed ID token without nonce keeps the original one, so the next refresh is still checked against it', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);
    expect(before.claims?.nonce).toEqual(expect.any(String));

    stub.reclaim = ({ nonce: _left, ...claims }) => claims;
    expect((await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`))).status).toBe(200);
    expect((await readLogin(stack, browser)).claims?.nonce).toBe(before.claims?.nonce);

    stub.reclaim = (claims) => ({ ...claims, nonce: 'nonce-of-another-login' });
    const result = await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`));
    await expectLoginEnded(stack, browser, before.id, result, /nonce/);
  });

  test('a refreshed ID token re-signed with the same claims is accepted (control for the §12.2 cases)', async () => {
    const browser = await login();
    const before = await readLogin(stack, browser);

    stub.reclaim = (claims) => claims;
    const result = await inMode(stub, 'reclaim', () => getJson(browser, `${stack.appUrl}/api/refresh`));

    expect(result.status).toBe(200);
    expect((await readLogin(stack, browser)).version).toBe((before.version ?? 1) + 1);
  });
});

/**
 * Calls `url` while the token store's compare-and-set write (the `EVAL` of a script that decodes the stored version)
 * fails for as long as `failing(failuresSoFar)` says; the lock's own scripts are left alone.
 */
async function withFailingStoreWrites(target: Stack, browser: Browser, url: string, failing: (failures: number) => boolean) {
  const redis = target.redis as unknown as { eval: (...args: unknown[]) => Promise<unknown> };
  const original = redis.eval.bind(redis);
  let failures = 0;
  redis.eval = async (...args: unknown[]) => {
    if (String(args[0]).includes('cjson.decode') && failing(failures)) {
      failures++;
      throw new Error('Connection is closed.');
    }
    return original(...args);
  };
  try {
    return { answer: await getJson(browser, url), failures };
  } finally {
    redis.eval = original;
  }
}

describe('Redis failing after the server rotated the refresh token', () => {
  let short: Stack;
  beforeAll(async () => {
    // A short lease (3 × 1 s + 1 s), so that the write can be failed for the whole of it.
    short = await startRefreshStack({ httpTimeout: 1000 });
  });
  afterAll(async () => short.close());

  async function dueLogin() {
    const browser = new Browser();
    expect((await browser.login(`${short.appUrl}/login?returnTo=/me`)).status).toBe(200);
    const before = await readLogin(short, browser);
    await waitUntilDue(before.tokens);
    return { browser, before };
  }

  test('a failed write of the new tokens is retried, and the login goes on', async () => {
    const { browser, before } = await dueLogin();
    const { answer: first, failures } = await withFailingStoreWrites(short, browser, `${short.appUrl}/api/token`, (n) => n < 2);
    expect(failures).toBe(2);
    expect(first.status).toBe(200);
    const stored = await readRecord(short.redis, tokenKey(short, before.id));
    expect(stored).toMatchObject({ v: 2 });
    expect(stored?.tokens?.refreshToken).not.toBe(before.tokens.refreshToken);

    // The rotated refresh token was kept: the next refresh uses it, and the server sees no reuse.
    const again = await getJson(browser, `${short.appUrl}/api/refresh`);
    expect(again.status).toBe(200);
    expect(short.provider.count('grant.revoked')).toBe(0);
  });

  test('when the store stays down for the whole lease, the new tokens still reach the session copy', async () => {
    const { browser, before } = await dueLogin();
    const { answer: first, failures } = await withFailingStoreWrites(short, browser, `${short.appUrl}/api/token`, () => true);
    expect(failures).toBeGreaterThan(1);
    expect(first.status).toBe(200);
    expect(await readRecord(short.redis, tokenKey(short, before.id))).toMatchObject({ v: 1 });
    const copy = await readLogin(short, browser);
    expect(copy.version).toBe(2);
    expect(copy.tokens.refreshToken).not.toBe(before.tokens.refreshToken);
    expect(copy.tokens.accessToken).toBe(first.body.accessToken);

    // The session's newer version wins over the store's: the next refresh presents the rotated token.
    const again = await getJson(browser, `${short.appUrl}/api/refresh`);
    expect(again.status).toBe(200);
    expect(short.provider.count('grant.revoked')).toBe(0);
    expect(await readRecord(short.redis, tokenKey(short, before.id))).toMatchObject({ v: 3 });
  });
});

describe('refresh without redis (single process)', () => {
  let local: Stack;
  beforeAll(async () => {
    local = await startRefreshStack({ redis: undefined });
  });
  afterAll(async () => local.close());

  test('100 concurrent calls share one refresh in the process', async () => {
    const browser = new Browser();
    expect((await browser.login(`${local.appUrl}/login?returnTo=/me`)).status).toBe(200);
    const before = await readLogin(local, browser);
    // Nothing of the library's in Redis: only the session.
    expect(await local.redis.exists(tokenKey(local, before.id))).toBe(0);
    await waitUntilDue(before.tokens);

    const results = await burst(() => getJson(browser, `${local.appUrl}/api/token`));

    expect(new Set(results.map((r) => `${r.status} ${String(r.body.accessToken)}`)).size).toBe(1);
    expect(results[0]?.status).toBe(200);
    expect(results[0]?.body.accessToken).not.toBe(before.tokens.accessToken);
    expect(refreshGrants(local.provider)).toBe(1);
    expect(local.provider.count('grant.revoked')).toBe(0);
    expect(await local.redis.exists(tokenKey(local, before.id))).toBe(0);
  });
});

/**
 * Refreshes whose answer must come at one exact moment, against a small token endpoint that rotates refresh tokens and,
 * like a server with reuse detection, kills the whole family when a spent one comes back (fixtures/rotating-server.ts).
 * Two refreshers are two `auth()` runtimes sharing Redis, as two processes would.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { AuthError } from '../../lib/errors.js';
import { createDPoPKey } from '../../lib/dpop.js';
import { endsLogin, leaseMs } from '../../lib/refresh.js';
import type { Runtime } from '../../lib/runtime.js';
import type { LoginState } from '../../lib/session.js';
import { sessionCopy, type StoredTokens } from '../../lib/tokens.js';
import { connectRedis } from '../helpers/app.js';
import { startRotatingServer, type RotatingServer } from './fixtures/rotating-server.js';

const redis = connectRedis();
let server: RotatingServer;

beforeAll(async () => {
  server = await startRotatingServer();
});
afterAll(async () => {
  await server.close();
  redis.disconnect();
});

/** A login whose access token has expired, with a refresh token the server accepts, stored as version 1. */
async function expiredLogin(runtime: Runtime, extra: Partial<LoginState> = {}): Promise<{ login: LoginState; refreshToken: string }> {
  const refreshToken = server.issue();
  const tokens: StoredTokens = { accessToken: `at-${randomUUID()}`, tokenType: 'Bearer', refreshToken, expiresAt: 1, lifetime: 300 };
  const login: LoginState = { id: randomUUID(), tokens: sessionCopy(tokens), ...extra };
  await runtime.tokenStore.create(login, tokens, 600);
  return { login, refreshToken };
}

test('a holder that stalled past its lease does not send the refresh token another holder has rotated since', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const [a, b] = [server.runtime(redis, keyPrefix), server.runtime(redis, keyPrefix)];
  const { login, refreshToken } = await expiredLogin(a);

  // A stalls on its re-read under the lock (a slow Redis, a blocked event loop) until its lease has run out.
  const read = a.tokenStore.read.bind(a.tokenStore);
  let reads = 0;
  a.tokenStore.read = async (id) => {
    const entry = await read(id);
    if (++reads === 2) await sleep(leaseMs(a.config) + 500);
    return entry;
  };
  const inA = a.refresher.current(login, { force: false, ttlSeconds: 600 });
  await sleep(200);
  const inB = b.refresher.current(login, { force: false, ttlSeconds: 600 });
  const [fromA, fromB] = await Promise.all([inA, inB]);

  // B took over once A's lease ran out and rotated the token; A then found its lock gone and took B's version.
  expect(server.presented.filter((token) => token === refreshToken)).toHaveLength(1);
  expect(fromA.v).toBe(2);
  expect(fromA.tokens.refreshToken).toBe(fromB.tokens.refreshToken);
  expect(server.live.has(String(fromB.tokens.refreshToken))).toBe(true);
}, 20_000);

test('with dpop on, a Bearer token at refresh ends the login (its refresh token is spent) and the new tokens are revoked', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const runtime = server.runtime(redis, keyPrefix, { dpop: true });
  const { login, refreshToken } = await expiredLogin(runtime, { dpopKey: (await createDPoPKey(runtime)).jwk });
  server.tokenType = 'Bearer';
  const presentedBefore = server.presented.length;
  // What the store held when the revocations arrived: the tombstone must come first, so that no other process can
  // present the spent refresh token while they run.
  const seenAtRevocation: unknown[] = [];
  server.onRevoke = async () => void seenAtRevocation.push(await runtime.tokenStore.read(login.id));

  const failure = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 }).then(
    () => undefined,
    (err: unknown) => err,
  );
  server.onRevoke = undefined;
  expect(seenAtRevocation).toEqual([expect.objectContaining({ ended: true }), expect.objectContaining({ ended: true })]);

  expect(server.presented.slice(presentedBefore)).toEqual([refreshToken]);
  expect(failure).toBeInstanceOf(AuthError);
  expect(failure).toMatchObject({ code: 'login_required', status: 401 });
  // The scheme as RFC 6750 spells it, not oauth4webapi's lowercased token_type.
  expect((failure as AuthError).message).toContain('issued a Bearer token instead of a DPoP-bound one');
  expect(endsLogin(failure)).toBe(true);
  // Every process sees the login as ended, and the server no longer accepts the tokens it issued in that answer.
  expect(await runtime.tokenStore.read(login.id)).toMatchObject({ ended: true });
  expect(server.revoked).toHaveLength(2);
  expect(server.revoked[0]).toMatch(/^rt-/);
  expect(server.live.has(server.revoked[0]!)).toBe(false);
});

test('with dpop on, a Bearer answer that did not rotate the refresh token: the login ends and that one, still valid, is revoked', async () => {
  const runtime = server.runtime(redis, `test:${randomUUID()}:`, { dpop: true });
  const { login, refreshToken } = await expiredLogin(runtime, { dpopKey: (await createDPoPKey(runtime)).jwk });
  server.rotation = false;
  const revokedBefore = server.revoked.length;
  try {
    const failure = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toMatchObject({ code: 'login_required', status: 401 });
    expect(endsLogin(failure)).toBe(true);
  } finally {
    server.rotation = true;
  }
  // The answer's access token and the login's refresh token, which the server kept alive: nobody holds either now.
  const revoked = server.revoked.slice(revokedBefore);
  expect(revoked).toHaveLength(2);
  expect(revoked).toContain(refreshToken);
  expect(revoked.find((token) => token !== refreshToken)).toMatch(/^at-/);
  expect(server.live.has(refreshToken)).toBe(false);
});

test('a refresh answered after the login ended (logout) revokes the tokens it got, which nobody will use', async () => {
  const runtime = server.runtime(redis, `test:${randomUUID()}:`);
  const { login } = await expiredLogin(runtime);
  // The server has granted the refresh; the user logs out before its answer arrives.
  server.beforeAnswer = async () => void (await runtime.tokenStore.end(login.id, 60));
  const revokedBefore = server.revoked.length;
  try {
    const failure = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toMatchObject({ code: 'login_required' });
    expect(endsLogin(failure)).toBe(true);
  } finally {
    server.beforeAnswer = undefined;
  }
  const revoked = server.revoked.slice(revokedBefore);
  expect(revoked).toHaveLength(2);
  expect(revoked[0]).toMatch(/^rt-/);
  expect(server.live.has(revoked[0]!)).toBe(false);
});

/**
 * A sibling rotates the login's token while this refresher holds a stale read (their leases overlapped): `refreshToken`
 * is spent, and the store gets version 2 right after the refresher's read under the lock (its second read), with an
 * access token already due again, so that the refresher must go on with the sibling's refresh token. `onRead` sees the
 * number of each read; `atRead` and `expiresAt` move the sibling's write to another read and give its access token
 * another expiry. Returns the sibling's tokens.
 */
function siblingRotates(
  runtime: Runtime,
  login: LoginState,
  refreshToken: string,
  onRead?: (reads: number) => Promise<void>,
  { atRead = 2, expiresAt = 1 }: { atRead?: number; expiresAt?: number } = {},
): StoredTokens {
  server.live.delete(refreshToken);
  const sibling: StoredTokens = { accessToken: `at-${randomUUID()}`, tokenType: 'Bearer', refreshToken: server.issue(), expiresAt, lifetime: 300 };
  const read = runtime.tokenStore.read.bind(runtime.tokenStore);
  let reads = 0;
  runtime.tokenStore.read = async (id) => {
    const entry = await read(id);
    reads++;
    if (reads === atRead) expect(await runtime.tokenStore.write(login.id, { v: 2, tokens: sibling }, 600)).toBe(true);
    await onRead?.(reads);
    return entry;
  };
  return sibling;
}

test.each([
  ['400 invalid_grant', { status: 400, body: { error: 'invalid_grant' } }],
  ["GitHub's 200 bad_refresh_token", { status: 200, body: { error: 'bad_refresh_token', error_description: 'The refresh token passed is incorrect or expired.' } }],
])('a dead refresh token (%s) is believed only once the store has nothing newer: a sibling may have rotated it', async (_case, answer) => {
  const runtime = server.runtime(redis, `test:${randomUUID()}:`);
  const { login, refreshToken } = await expiredLogin(runtime);
  const sibling = siblingRotates(runtime, login, refreshToken);
  server.spentAnswer = answer;
  // Without reuse detection (as at GitHub): the sibling's token still works after the spent one came back.
  server.reuseDetection = false;
  try {
    const presentedBefore = server.presented.length;
    const record = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 });
    expect(server.presented.slice(presentedBefore)).toEqual([refreshToken, sibling.refreshToken]);
    expect(record.v).toBe(3);
    expect(server.live.has(String(record.tokens.refreshToken))).toBe(true);
  } finally {
    server.spentAnswer = { status: 400, body: { error: 'invalid_grant' } };
    server.reuseDetection = true;
  }
  expect(await runtime.tokenStore.read(login.id)).toMatchObject({ v: 3 });
});

test('before a second refresh token goes out (after a re-read), the lock is renewed; lost, the refresher waits its turn', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const runtime = server.runtime(redis, keyPrefix);
  const { login, refreshToken } = await expiredLogin(runtime);
  const lockKey = `${keyPrefix}lock:${login.id}`;
  // By the re-read that follows the refusal, this refresher's lease has run out and another holder has the lock.
  siblingRotates(runtime, login, refreshToken, async (reads) => void (reads === 3 && (await redis.set(lockKey, 'another-holder', 'PX', 300))));
  let ownerWhenSent: string | null | undefined;
  server.reuseDetection = false;
  server.beforeAnswer = async () => void (ownerWhenSent = await redis.get(lockKey));
  try {
    const record = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 });
    expect(record.v).toBe(3);
  } finally {
    server.reuseDetection = true;
    server.beforeAnswer = undefined;
  }
  expect(ownerWhenSent).toEqual(expect.any(String));
  expect(ownerWhenSent).not.toBe('another-holder');
});

test.each([
  // The sibling's version is there when the refresher re-reads after the refusal.
  ['a dead refresh token after a sibling stored tokens still fresh: the sibling’s version is used, no other refresh token goes out', 2],
  // Reads: before the lock, under it, then the re-read after the refusal, which still finds version 1; the sibling's
  // version 2 lands right after it, before this refresher writes its tombstone.
  ['a sibling version stored after the re-read, before the tombstone, wins: the login is not ended over its spent token', 3],
])('%s', async (_name, atRead) => {
  const runtime = server.runtime(redis, `test:${randomUUID()}:`);
  const { login, refreshToken } = await expiredLogin(runtime);
  const sibling = siblingRotates(runtime, login, refreshToken, undefined, { atRead, expiresAt: Math.floor(Date.now() / 1000) + 300 });
  server.reuseDetection = false;
  try {
    const presentedBefore = server.presented.length;
    const record = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 });
    expect(server.presented.slice(presentedBefore)).toEqual([refreshToken]);
    expect(record.v).toBe(2);
    expect(record.tokens.accessToken).toBe(sibling.accessToken);
    expect(record.tokens.refreshToken).toBe(sibling.refreshToken);
  } finally {
    server.reuseDetection = true;
  }
  expect(await runtime.tokenStore.read(login.id)).toMatchObject({ v: 2, tokens: { refreshToken: sibling.refreshToken } });
});

test('a holder that got the lock right after another holder stored its version does not refresh again', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const [a, b] = [server.runtime(redis, keyPrefix), server.runtime(redis, keyPrefix)];
  const { login, refreshToken } = await expiredLogin(a);
  // B reads version 1 (due), then A refreshes and releases its lock before B takes the lock.
  let fromA: Promise<unknown> | undefined;
  const read = b.tokenStore.read.bind(b.tokenStore);
  b.tokenStore.read = async (id) => {
    const entry = await read(id);
    fromA ??= a.refresher.current(login, { force: false, ttlSeconds: 600 });
    await fromA;
    return entry;
  };
  const presentedBefore = server.presented.length;
  const fromB = await b.refresher.current(login, { force: false, ttlSeconds: 600 });

  expect(server.presented.slice(presentedBefore)).toEqual([refreshToken]);
  expect(fromB).toEqual(await fromA);
  expect(fromB.v).toBe(2);
});

test('a refresh answer without an ID token keeps the login’s ID token (logout’s id_token_hint, getIdToken())', async () => {
  const runtime = server.runtime(redis, `test:${randomUUID()}:`);
  const refreshToken = server.issue();
  const tokens: StoredTokens = { accessToken: `at-${randomUUID()}`, tokenType: 'Bearer', refreshToken, idToken: 'id-token-of-the-login', expiresAt: 1, lifetime: 300 };
  const login: LoginState = { id: randomUUID(), tokens: sessionCopy(tokens) };
  await runtime.tokenStore.create(login, tokens, 600);

  const record = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 });

  expect(record.v).toBe(2);
  expect(record.tokens.refreshToken).not.toBe(refreshToken);
  expect(record.tokens.idToken).toBe('id-token-of-the-login');
  expect(await runtime.tokenStore.read(login.id)).toMatchObject({ v: 2, tokens: { idToken: 'id-token-of-the-login' } });
});

test('a lock other processes keep for two leases ends the wait with refresh_failed (503); the login stays, and a later call refreshes', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const runtime = server.runtime(redis, keyPrefix);
  const { login, refreshToken } = await expiredLogin(runtime);
  const lease = leaseMs(runtime.config);
  // Holders that never store a version, one after another: to the waiting process, one lock that never comes free.
  const lockKey = `${keyPrefix}lock:${login.id}`;
  await redis.set(lockKey, 'other-processes', 'PX', 4 * lease);
  const presentedBefore = server.presented.length;

  const started = Date.now();
  const failure = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 }).then(
    () => undefined,
    (err: unknown) => err,
  );

  expect(failure).toBeInstanceOf(AuthError);
  expect(failure).toMatchObject({ code: 'refresh_failed', status: 503 });
  expect((failure as AuthError).message).toMatch(/too long/);
  expect(endsLogin(failure)).toBe(false);
  // It waited out two leases, the most a live holder could need for two refreshes, and sent nothing meanwhile.
  expect(Date.now() - started).toBeGreaterThanOrEqual(2 * lease);
  expect(server.presented.length).toBe(presentedBefore);
  expect(await runtime.tokenStore.read(login.id)).toMatchObject({ v: 1, tokens: { refreshToken } });

  // Once the lock is free, the next call refreshes with the login's refresh token.
  await redis.del(lockKey);
  const record = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 });
  expect(record.v).toBe(2);
  expect(server.presented.slice(presentedBefore)).toEqual([refreshToken]);
}, 20_000);

test('a forced refresh that joins a refresh of an older session copy, which ends on the version it has seen, refreshes once more', async () => {
  const runtime = server.runtime(redis, `test:${randomUUID()}:`);
  const { login } = await expiredLogin(runtime);
  const second = await runtime.refresher.current(login, { force: false, ttlSeconds: 600 });
  // This request's session holds version 2 already; another request still carries the copy read before it (version 1).
  const seen: LoginState = { ...login, version: second.v, tokens: sessionCopy(second.tokens) };
  const presentedBefore = server.presented.length;

  const stale = runtime.refresher.current(login, { force: false, ttlSeconds: 600 });
  const forced = runtime.refresher.current(seen, { force: true, ttlSeconds: 600 });

  // The stale copy's refresh is satisfied by version 2 without a token request; the forced one is not.
  expect(await stale).toMatchObject({ v: 2 });
  const record = await forced;
  expect(record.v).toBe(3);
  expect(record.tokens.accessToken).not.toBe(second.tokens.accessToken);
  expect(server.presented.slice(presentedBefore)).toEqual([second.tokens.refreshToken]);
});

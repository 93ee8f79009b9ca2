import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { resolveOptions } from '../../lib/options.js';
import { createTokenStore, FINAL_VERSION, newestTokens, type TokenStore } from '../../lib/token-store.js';
import { sessionCopy } from '../../lib/tokens.js';
import { connectRedis, startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { postLogout } from '../logout/support.js';
import { refreshRoutes } from './fixtures/routes.js';
import { getJson, readLogin, readRecord, REFRESH_SKEW, refreshingProvider, tokenKey } from './support.js';

// Ending a login (logout): the tombstone goes in and the entry it replaced comes back in one step, so that a refresh
// committing at the same moment either lands before (and its tokens are returned, to be revoked) or loses.
const redis = connectRedis();
afterAll(() => redis.disconnect());

const base = { issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback' };
const tokens = { accessToken: 'access-2', tokenType: 'Bearer', refreshToken: 'refresh-2' };

const stores: Array<[string, () => TokenStore]> = [
  ['with redis', () => createTokenStore(resolveOptions({ ...base, redis, keyPrefix: `test:${randomUUID()}:` }))],
  ['without redis', () => createTokenStore(resolveOptions(base))],
];

describe.each(stores)('TokenStore.end() %s', (_name, makeStore: () => TokenStore) => {
  test('returns the entry it replaces, and nothing can be written after it', async () => {
    const store = makeStore();
    const first = { accessToken: 'access-1', tokenType: 'Bearer', refreshToken: 'refresh-1' };
    const login = { id: randomUUID(), tokens: sessionCopy(first) };
    await store.create(login, first, 60);
    expect(await store.write(login.id, { v: 2, tokens }, 60)).toBe(true);

    expect(await store.end(login.id, 60)).toEqual({ v: 2, tokens, claims: undefined });
    expect(await store.read(login.id)).toEqual({ v: FINAL_VERSION, ended: true });
    // A refresh that committed late loses against the tombstone.
    expect(await store.write(login.id, { v: 3, tokens }, 60)).toBe(false);
    // Ending it again returns the tombstone and leaves it in place.
    expect(await store.end(login.id, 60)).toEqual({ v: FINAL_VERSION, ended: true });
  });

  test('ends a login the store no longer knows (expired or evicted) and returns nothing', async () => {
    const store = makeStore();
    const id = randomUUID();
    expect(await store.end(id, 60)).toBeUndefined();
    expect(await store.read(id)).toEqual({ v: FINAL_VERSION, ended: true });
  });
});

// Compare-and-set on the version: only a newer version gets in, and it stays for the TTL it was given.
describe.each(stores)('TokenStore.write() %s', (_name, makeStore: () => TokenStore) => {
  test('refuses the version the store already holds: a second holder of one version cannot replace the first one’s tokens', async () => {
    const store = makeStore();
    const first = { accessToken: 'access-1', tokenType: 'Bearer', refreshToken: 'refresh-1' };
    const login = { id: randomUUID(), tokens: sessionCopy(first) };
    await store.create(login, first, 60);
    expect(await store.write(login.id, { v: 2, tokens }, 60)).toBe(true);

    const late = { accessToken: 'access-late', tokenType: 'Bearer', refreshToken: 'refresh-late' };
    expect(await store.write(login.id, { v: 2, tokens: late }, 60)).toBe(false);
    expect(await store.read(login.id)).toEqual({ v: 2, tokens, claims: undefined });
  });

  test('the TTL is in seconds: an entry is still there well within it', async () => {
    const store = makeStore();
    const id = randomUUID();
    expect(await store.write(id, { v: 1, tokens }, 5)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await store.read(id)).toEqual({ v: 1, tokens, claims: undefined });
  });
});

test('with redis, an entry whose version is not a whole number from 1 to 2^53 - 1 counts as absent: the store holds only what the library wrote', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const store = createTokenStore(resolveOptions({ ...base, redis, keyPrefix }));
  for (const v of [0, -1, 1.5, 2 ** 53, '2']) {
    const id = randomUUID();
    await redis.set(`${keyPrefix}tokens:${id}`, JSON.stringify({ v, tokens }), 'EX', 60);
    expect(await store.read(id)).toBeUndefined();
  }
  const id = randomUUID();
  await redis.set(`${keyPrefix}tokens:${id}`, JSON.stringify({ v: 2, tokens }), 'EX', 60);
  expect(await store.read(id)).toEqual({ v: 2, tokens });
});

test("what a logout revokes: the store's whole set unless it is older than the session's copy (a store that lost writes), or ended", () => {
  const stored = { accessToken: 'access-1', tokenType: 'Bearer', refreshToken: 'refresh-1', idToken: 'id-1' };
  const login = { id: randomUUID(), tokens: sessionCopy(tokens), version: 2 };
  expect(newestTokens({ v: 2, tokens: stored }, login)).toEqual(stored);
  expect(newestTokens({ v: 3, tokens: stored }, login)).toEqual(stored);
  expect(newestTokens({ v: 1, tokens: stored }, login)).toMatchObject(tokens);
  expect(newestTokens({ v: FINAL_VERSION, ended: true }, login)).toMatchObject(tokens);
  expect(newestTokens(undefined, login)).toMatchObject(tokens);
  // A login's own first version: a session copy without a version is version 1.
  expect(newestTokens({ v: 1, tokens: stored }, { ...login, version: undefined })).toEqual(stored);
});

test('with redis, the tombstone carries the TTL it was given', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const store = createTokenStore(resolveOptions({ ...base, redis, keyPrefix }));
  const id = randomUUID();
  await store.end(id, 120);
  const ttl = await redis.ttl(`${keyPrefix}tokens:${id}`);
  expect(ttl).toBeGreaterThan(100);
  expect(ttl).toBeLessThanOrEqual(120);
});

describe('the token-store key lives as long as the session will after this request', () => {
  // express-session gives the session a full maxAge again when it saves or touches it at the end of each request; the
  // cookie read during the request still carries the expiry of its last save. A key written with that older expiry
  // would die seconds after a refresh, and with it the defence against a stale session save bringing a spent refresh
  // token back (the next refresh would present it, and reuse detection would revoke the grant).
  const MAX_AGE_S = 12;
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      provider: { configuration: refreshingProvider },
      auth: { refreshSkew: REFRESH_SKEW },
      session: { cookie: { maxAge: MAX_AGE_S * 1000 } },
      routes: (app) => refreshRoutes(app, {}),
    });
  });
  afterAll(async () => stack.close());

  test('at login the key gets the session\'s maxAge, not a default day', async () => {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    const { id } = await readLogin(stack, browser);

    const ttl = await stack.redis.ttl(tokenKey(stack, id));
    expect(ttl).toBeGreaterThanOrEqual(MAX_AGE_S - 2);
    expect(ttl).toBeLessThanOrEqual(MAX_AGE_S);
  });

  test('after a refresh and after logout (the tombstone), the key gets the full maxAge', async () => {
    const browser = new Browser();
    await browser.login(`${stack.appUrl}/login?returnTo=/me`);
    const { id } = await readLogin(stack, browser);
    await new Promise((resolve) => setTimeout(resolve, 4_000));

    expect((await getJson(browser, `${stack.appUrl}/api/refresh`)).status).toBe(200);
    expect(await stack.redis.ttl(tokenKey(stack, id))).toBeGreaterThanOrEqual(MAX_AGE_S - 1);

    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect((await postLogout(browser, stack.appUrl)).status).toBe(303);
    expect(await readRecord(stack.redis, tokenKey(stack, id))).toMatchObject({ ended: true });
    expect(await stack.redis.ttl(tokenKey(stack, id))).toBeGreaterThanOrEqual(MAX_AGE_S - 1);
  });
});

import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, test } from '@jest/globals';
import { resolveOptions } from '../../lib/options.js';
import { createTokenStore, FINAL_VERSION, type TokenStore } from '../../lib/token-store.js';
import { sessionCopy } from '../../lib/tokens.js';
import { connectRedis } from '../helpers/app.js';

// Ending a login (logout): the tombstone goes in and the entry it replaced comes back in one step, so that a refresh
// committing at the same moment either lands before (and its tokens are returned, to be revoked) or loses.
const redis = connectRedis();
afterAll(() => redis.disconnect());

const base = { issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback' };
const tokens = { accessToken: 'access-2', tokenType: 'Bearer', refreshToken: 'refresh-2' };

describe.each([
  ['with redis', () => createTokenStore(resolveOptions({ ...base, redis, keyPrefix: `test:${randomUUID()}:` }))],
  ['without redis', () => createTokenStore(resolveOptions(base))],
])('TokenStore.end() %s', (_name, makeStore: () => TokenStore) => {
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

test('with redis, the tombstone carries the TTL it was given', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const store = createTokenStore(resolveOptions({ ...base, redis, keyPrefix }));
  const id = randomUUID();
  await store.end(id, 120);
  const ttl = await redis.ttl(`${keyPrefix}tokens:${id}`);
  expect(ttl).toBeGreaterThan(100);
  expect(ttl).toBeLessThanOrEqual(120);
});

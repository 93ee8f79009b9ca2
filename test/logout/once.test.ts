/**
 * The single-use registry behind back-channel logout's jti (and the callback's state), on a real Redis, with two
 * registries as two processes. A claim whose work fails is given back so the sender's retry can run; only the claim
 * itself, never one another process took after it ran out.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, expect, test } from '@jest/globals';
import { createOnceRegistry } from '../../lib/once.js';
import { resolveOptions } from '../../lib/options.js';
import { connectRedis } from '../helpers/app.js';

const redis = connectRedis();
afterAll(() => redis.disconnect());

/** A registry of a process without Redis: its own map answers alone. */
function localRegistry() {
  return createOnceRegistry(resolveOptions({ issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback' }));
}

function registry(keyPrefix: string) {
  return createOnceRegistry(
    resolveOptions({ issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback', redis, keyPrefix }),
  );
}

test('giving back a claim that ran out leaves the claim another process took since', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const [first, second] = [registry(keyPrefix), registry(keyPrefix)];

  const mine = await first.claim('logout-jti:a', 150);
  expect(mine).toEqual(expect.any(String));
  expect(await second.claim('logout-jti:a', 60_000)).toBeUndefined();
  await sleep(250);
  // The first claim's lease ran out (its process stalled); a retry took the value on the second process.
  const theirs = await second.claim('logout-jti:a', 60_000);
  expect(theirs).toEqual(expect.any(String));

  // The first process's work fails after all, and it gives its claim back: not the second's.
  await first.release('logout-jti:a', mine!);
  expect(await redis.exists(`${keyPrefix}once:logout-jti:a`)).toBe(1);
  expect(await registry(keyPrefix).claim('logout-jti:a', 60_000)).toBeUndefined();

  // The second gives back its own.
  await second.release('logout-jti:a', theirs!);
  expect(await redis.exists(`${keyPrefix}once:logout-jti:a`)).toBe(0);
});

test('in one process too: giving back a claim that ran out leaves the claim of the retry, here and in Redis', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const process1 = registry(keyPrefix);

  const first = await process1.claim('logout-jti:c', 150);
  await sleep(250);
  const retry = await process1.claim('logout-jti:c', 60_000);
  expect(retry).toEqual(expect.any(String));

  await process1.release('logout-jti:c', first!);
  expect(await process1.claim('logout-jti:c', 60_000)).toBeUndefined();
  expect(await registry(keyPrefix).claim('logout-jti:c', 60_000)).toBeUndefined();
});

test('a finished claim is used, on every process, and is not given back', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const [first, second] = [registry(keyPrefix), registry(keyPrefix)];

  const claimId = await first.claim('logout-jti:b', 60_000);
  expect(claimId).toEqual(expect.any(String));
  expect(await second.holder('logout-jti:b')).toBe('in_progress');
  await first.finish('logout-jti:b', 60_000);
  expect(await second.claim('logout-jti:b', 60_000)).toBeUndefined();
  expect(await second.holder('logout-jti:b')).toBe('used');
  await first.release('logout-jti:b', claimId!);
  expect(await second.holder('logout-jti:b')).toBe('used');
});

test('without Redis: giving back a claim that ran out leaves the claim of the retry', async () => {
  const local = localRegistry();
  const first = await local.claim('logout-jti:d', 150);
  await sleep(250);
  const retry = await local.claim('logout-jti:d', 60_000);
  expect(retry).toEqual(expect.any(String));

  await local.release('logout-jti:d', first!);
  expect(await local.claim('logout-jti:d', 60_000)).toBeUndefined();
});

test('without Redis: a finished claim is used for its new lifetime, not in progress for its lease', async () => {
  const local = localRegistry();
  const claimId = await local.claim('logout-jti:e', 150);
  await local.finish('logout-jti:e', 60_000);
  await sleep(250);
  expect(await local.claim('logout-jti:e', 60_000)).toBeUndefined();
  expect(await local.holder('logout-jti:e')).toBe('used');
  await local.release('logout-jti:e', claimId!);
  expect(await local.holder('logout-jti:e')).toBe('used');
});

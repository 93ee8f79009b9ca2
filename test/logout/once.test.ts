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

function registry(keyPrefix: string) {
  return createOnceRegistry(
    resolveOptions({ issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback', redis, keyPrefix }),
  );
}

test('giving back a claim that ran out leaves the claim another process took since', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const [first, second] = [registry(keyPrefix), registry(keyPrefix)];

  expect(await first.claim('logout-jti:a', 150)).toBe(true);
  expect(await second.claim('logout-jti:a', 60_000)).toBe(false);
  await sleep(250);
  // The first claim's lease ran out (its process stalled); a retry took the value on the second process.
  expect(await second.claim('logout-jti:a', 60_000)).toBe(true);

  // The first process's work fails after all, and it gives its claim back: not the second's.
  await first.release('logout-jti:a');
  expect(await redis.exists(`${keyPrefix}once:logout-jti:a`)).toBe(1);
  expect(await registry(keyPrefix).claim('logout-jti:a', 60_000)).toBe(false);

  // The second gives back its own.
  await second.release('logout-jti:a');
  expect(await redis.exists(`${keyPrefix}once:logout-jti:a`)).toBe(0);
});

test('a finished claim is used, on every process, and is not given back', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const [first, second] = [registry(keyPrefix), registry(keyPrefix)];

  expect(await first.claim('logout-jti:b', 60_000)).toBe(true);
  expect(await second.holder('logout-jti:b')).toBe('in_progress');
  await first.finish('logout-jti:b', 60_000);
  expect(await second.claim('logout-jti:b', 60_000)).toBe(false);
  expect(await second.holder('logout-jti:b')).toBe('used');
  await first.release('logout-jti:b');
  expect(await second.holder('logout-jti:b')).toBe('used');
});

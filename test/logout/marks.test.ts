/**
 * The logout marks a callback checks after its saves (lib/session-index.ts), on a real Redis: which of a logout and a
 * login came first, by the server's clock (the two tokens' `iat`, whole seconds), and within one second by this app's
 * (when the mark was written against when the login's code exchange was sent).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, jest, test } from '@jest/globals';
import { createSessionIndex } from '../../lib/session-index.js';
import { connectRedis } from '../helpers/app.js';

const redis = connectRedis();
afterAll(() => redis.disconnect());

const index = createSessionIndex(redis, `test:${randomUUID()}:`, 'https://idp.example.com');
const T = 1_800_000_000;

/** A user's logout marked now with the logout token's `iat`; then whether a login of that user, issued at `loginIat`, was ended. */
async function endedBy(logoutIat: number, loginIat: number | undefined, exchanged: 'before the mark' | 'after the mark'): Promise<boolean> {
  const sub = `user-${randomUUID()}`;
  const beforeMark = Date.now() - 1000;
  await index.markLoggedOut({ sub }, logoutIat);
  const exchangedAt = exchanged === 'before the mark' ? beforeMark : Date.now() + 1000;
  return index.wasEnded(randomUUID(), { sub, issuedAt: loginIat, exchangedAt });
}

describe('the marks a logout leaves for the logins it may have missed', () => {
  test.each([
    ['a second newer than the login (whatever this app saw first)', true, T + 1, T, 'after the mark'],
    ['a second older than the login (whatever this app saw first)', false, T - 1, T, 'before the mark'],
    ['of the same second, the code exchange sent before the mark', true, T, T, 'before the mark'],
    ['of the same second, the code exchange sent after the mark', false, T, T, 'after the mark'],
    ['and a login whose ID token has no iat', true, T, undefined, 'after the mark'],
  ] as const)('a logout %s: the login is ended: %s', async (_case, ended, logoutIat, loginIat, exchanged) => {
    expect(await endedBy(logoutIat, loginIat, exchanged)).toBe(ended);
  });

  test('a logout of another user ends no login', async () => {
    await index.markLoggedOut({ sub: 'someone-else' }, T + 60);
    expect(await index.wasEnded(randomUUID(), { sub: `user-${randomUUID()}`, issuedAt: T, exchangedAt: Date.now() })).toBe(false);
  });

  test('a logout that marked the session id ends its login, whatever the times', async () => {
    const sessionId = randomUUID();
    await index.markEnded([sessionId]);
    expect(await index.wasEnded(sessionId, { sub: `user-${randomUUID()}`, issuedAt: T + 60, exchangedAt: Date.now() + 1000 })).toBe(true);
  });

  test('a mark of the same iat made earlier but written later (two deliveries racing) does not move the mark back in time', async () => {
    const sub = `user-${randomUUID()}`;
    const now = Date.now();
    const clock = jest.spyOn(Date, 'now');
    try {
      clock.mockReturnValue(now + 5000);
      await index.markLoggedOut({ sub }, T);
      clock.mockReturnValue(now);
      await index.markLoggedOut({ sub }, T);
    } finally {
      clock.mockRestore();
    }
    // A login of that second whose code exchange was sent between the two marks is ended by the later one.
    expect(await index.wasEnded(randomUUID(), { sub, issuedAt: T, exchangedAt: now + 2000 })).toBe(true);
  });
});

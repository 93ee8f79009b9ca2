/**
 * How long an ended login's tombstone lasts. A request in flight when a login ends may save a copy of its session back
 * afterwards, with a full `maxAge`; the tombstone must outlive that copy, or the copy could refresh again from its
 * session's tokens once the tombstone is gone. And at least `sessionIndexTtl`, as long as a back-channel logout could
 * find one of the login's sessions.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { SessionOptions } from 'express-session';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { loginUntilCallback } from '../helpers/security.js';
import { firstOnly, logoutClaims, logoutProviderConfiguration, me, sendLogoutToken, signLogoutToken, withFailingCommand } from './support.js';

const DAY_S = 24 * 60 * 60;

describe.each([
  // Longer than the default sessionIndexTtl (14 days) and than connect-redis's default day.
  ['a session of 30 days', { cookie: { maxAge: 30 * DAY_S * 1000 } }, 30 * DAY_S],
  // Without maxAge connect-redis keeps a session a day: the default sessionIndexTtl is the longer.
  ['a browser-session cookie (no maxAge)', {}, 14 * DAY_S],
] as Array<[string, Partial<SessionOptions>, number]>)('%s', (_name, sessionOptions, expectedTtl) => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ provider: { configuration: logoutProviderConfiguration }, session: sessionOptions });
  });
  afterAll(async () => stack.close());

  /** The token-store keys of this stack's logins. */
  const tokenKeys = async () => new Set(await stack.redis.keys(`${String(stack.authOptions.keyPrefix)}tokens:*`));

  /** The one token-store key `act` added. */
  async function addedKey(act: () => Promise<void>): Promise<string> {
    const before = await tokenKeys();
    await act();
    const added = [...(await tokenKeys())].filter((key) => !before.has(key));
    if (added.length !== 1) throw new Error(`expected one new token-store key, found ${added.length}`);
    return added[0] as string;
  }

  async function expectTombstone(key: string): Promise<void> {
    expect(JSON.parse((await stack.redis.get(key)) ?? 'null')).toMatchObject({ ended: true });
    const ttl = await stack.redis.ttl(key);
    expect(ttl).toBeGreaterThan(expectedTtl - 60);
    expect(ttl).toBeLessThanOrEqual(expectedTtl);
  }

  test("a back-channel logout's tombstone", async () => {
    const browser = new Browser();
    const sub = `user-${expectedTtl}`;
    const key = await addedKey(async () => {
      await browser.login(`${stack.appUrl}/login?returnTo=/me`, { login: sub });
    });

    const token = await signLogoutToken(stack.provider, logoutClaims(stack.provider.issuer, { sub }));
    expect((await sendLogoutToken(stack.appUrl, token)).status).toBe(200);

    expect((await me(browser, stack.appUrl)).status).toBe(401);
    await expectTombstone(key);
  });

  test("the tombstone of a callback that failed after storing the login's tokens", async () => {
    const browser = new Browser();
    const pending = await loginUntilCallback(stack, browser, { login: `failing-${expectedTtl}` });
    // The session's save after the code exchange fails: the login is abandoned, its tokens already stored.
    const isSessionWrite = (args: unknown[]) => String(args[0]).startsWith(stack.sessionPrefix);
    let answer: { status: number } | undefined;
    const key = await addedKey(async () => {
      const { result, failures } = await withFailingCommand(stack.redis, 'set', () => browser.request(pending.callbackUrl), firstOnly(isSessionWrite));
      expect(failures).toBe(1);
      answer = result;
    });

    expect(answer?.status).toBe(503);
    await expectTombstone(key);
  });
});

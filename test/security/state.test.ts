/**
 * `state`: one-time, unguessable, bound to the browser session, deleted on first use (RFC 6749 §10.12, RFC 9700 §4.7,
 * §2.1). Real oidc-provider, real Redis; authorization responses are replayed or tampered with by hand.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import {
  browserSessionId,
  editSession,
  expectRefusal,
  loginUntilCallback,
  readSession,
  storedSessions,
  withParams,
  observe,
  plantTransaction,
  type Observed,
} from '../helpers/security.js';

let stack: Stack;
let observed: Observed;

beforeAll(async () => {
  stack = await startStack();
  observed = observe(stack);
});
afterAll(async () => stack.close());

const forgedState = () => randomBytes(32).toString('base64url');

test('a forged state (well-formed, never issued) is refused and leaves the real login usable', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { state: forgedState() })), {
    status: 400,
    code: 'invalid_state',
    secrets: pending.secrets,
  });

  const real = await browser.request(pending.callbackUrl);
  expect(real.status).toBe(302);
});

test('a callback without state is refused', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  const refused = await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { state: undefined })), {
    status: 400,
    code: 'invalid_state',
    secrets: pending.secrets,
  });
  // Told that the state is missing, not that the sign-in link is unknown or used.
  expect(refused.body).toMatch(/The callback has no (&quot;|")state/);
});

test('a callback with an empty state is refused', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  const refused = await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { state: '' })), {
    status: 400,
    code: 'invalid_state',
    secrets: pending.secrets,
  });
  // Told that the state is missing, not that the sign-in link is unknown or used.
  expect(refused.body).toMatch(/The callback has no (&quot;|")state/);
});

test('a state of the wrong shape is refused without a lookup', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  for (const state of ['x', '__proto__', 'constructor', `${pending.state}.`, 'a'.repeat(200)]) {
    // A live transaction with the real verifier is stored under that very key: only the shape check refuses it.
    await plantTransaction(stack.redis, stack.sessionPrefix, pending.sid, pending.state, state);
    await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { state })), {
      status: 400,
      code: 'invalid_state',
      secrets: pending.secrets,
    });
  }
});

test('an authorization response from another browser session is refused (login CSRF) and does not burn the login', async () => {
  const victim = new Browser();
  const pending = await loginUntilCallback(stack, victim);
  const attacker = new Browser();
  // The attacker has a session of its own too, with a pending login: a state from elsewhere is still unknown to it.
  await attacker.request(`${stack.appUrl}/login`);

  await expectRefusal(observed, () => attacker.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
  // And with no session at all.
  await expectRefusal(observed, () => new Browser().request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });

  const real = await victim.request(pending.callbackUrl);
  expect(real.status).toBe(302);
});

test('a callback without any session cookie creates no session', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const stranger = new Browser();

  const response = await expectRefusal(observed, () => stranger.request(pending.callbackUrl), {
    status: 400,
    code: 'invalid_state',
    secrets: pending.secrets,
  });

  expect(response.headers.getSetCookie()).toEqual([]);
  expect(browserSessionId(stranger, stack.appUrl)).toBeUndefined();
});

test('state is deleted on first use even when that use is an error response', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const consumedBefore = stack.provider.count('authorization_code.consumed');
  const errorResponse = withParams(pending.callbackUrl, { code: undefined, error: 'access_denied', error_description: 'user said no' });

  await expectRefusal(observed, () => browser.request(errorResponse), { status: 403, code: 'access_denied', secrets: pending.secrets });
  // Deleted from the session itself, not only marked used: the session is still there, its transaction is not.
  expect(browserSessionId(browser, stack.appUrl)).toBe(pending.sid);
  const session = await readSession(stack.redis, stack.sessionPrefix, pending.sid);
  expect(session).toBeDefined();
  expect(session?.oauth?.tx?.[pending.state]).toBeUndefined();
  // It was the only pending login: no empty container is left behind either.
  expect(session?.oauth).not.toHaveProperty('tx');
  // The real code for the same state arrives afterwards (an attacker racing the user): the state is gone.
  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });

  expect(stack.provider.count('authorization_code.consumed')).toBe(consumedBefore);
});

test('an expired transaction (older than 10 minutes) is refused', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  await editSession(stack.redis, stack.sessionPrefix, pending.sid, (session) => {
    session.oauth!.tx![pending.state]!.createdAt -= 10 * 60 * 1000 + 1000;
  });

  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
  expect((await readSession(stack.redis, stack.sessionPrefix, pending.sid))?.oauth?.tx?.[pending.state]).toBeUndefined();
});

test('a transaction dated more than a minute ahead of the clock (written before the clock was stepped back) is refused', async () => {
  // Otherwise it would stay usable for ten minutes past its real lifetime.
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  await editSession(stack.redis, stack.sessionPrefix, pending.sid, (session) => {
    session.oauth!.tx![pending.state]!.createdAt += 5 * 60 * 1000;
  });

  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
  expect((await readSession(stack.redis, stack.sessionPrefix, pending.sid))?.oauth?.tx?.[pending.state]).toBeUndefined();
});

test('starting a login drops the expired transactions from the session (their verifiers are not kept)', async () => {
  const browser = new Browser();
  const expired = await loginUntilCallback(stack, browser);
  await editSession(stack.redis, stack.sessionPrefix, expired.sid, (session) => {
    session.oauth!.tx![expired.state]!.createdAt -= 10 * 60 * 1000 + 1000;
  });

  const started = await browser.request(`${stack.appUrl}/login?returnTo=/again`);
  expect(started.status).toBe(302);
  const state = new URL(started.headers.get('location')!).searchParams.get('state')!;

  const sid = browserSessionId(browser, stack.appUrl)!;
  expect(Object.keys((await readSession(stack.redis, stack.sessionPrefix, sid))?.oauth?.tx ?? {})).toEqual([state]);
});

test('more than 10 pending transactions: the oldest is dropped, the newest ones still complete', async () => {
  const browser = new Browser();
  const authorizationUrls: URL[] = [];
  for (let i = 0; i < 11; i++) {
    const started = await browser.request(`${stack.appUrl}/login?returnTo=/tab-${i}`);
    expect(started.status).toBe(302);
    authorizationUrls.push(new URL(started.headers.get('location')!));
  }
  const states = authorizationUrls.map((url) => url.searchParams.get('state')!);
  const sid = browserSessionId(browser, stack.appUrl)!;
  const pendingStates = Object.keys((await readSession(stack.redis, stack.sessionPrefix, sid))?.oauth?.tx ?? {});
  expect(pendingStates.sort()).toEqual(states.slice(1).sort());

  // The dropped transaction's state is refused before any code is redeemed.
  const dropped = new URL(`${stack.appUrl}/callback`);
  dropped.search = new URLSearchParams({ code: 'any-code-value', state: states[0]!, iss: stack.provider.issuer }).toString();
  await expectRefusal(observed, () => browser.request(dropped), { status: 400, code: 'invalid_state' });

  // The oldest kept one still completes.
  const kept = await loginUntilCallback(stack, browser, { start: authorizationUrls[1]!.href });
  const landed = await browser.request(kept.callbackUrl);
  expect({ status: landed.status, location: landed.headers.get('location') }).toEqual({ status: 302, location: '/tab-1' });
});

test('several tabs in flight at once: each completes with its own returnTo', async () => {
  const browser = new Browser();
  const consumedBefore = stack.provider.count('authorization_code.consumed');
  const first = await loginUntilCallback(stack, browser, { returnTo: '/first' });
  const second = await loginUntilCallback(stack, browser, { returnTo: '/second' });

  // Completed in the opposite order; the first callback rotates the session id, the second must still work.
  const b = await browser.request(second.callbackUrl);
  const a = await browser.request(first.callbackUrl);

  expect([b.status, b.headers.get('location'), a.status, a.headers.get('location')]).toEqual([302, '/second', 302, '/first']);
  expect(stack.provider.count('authorization_code.consumed') - consumedBefore).toBe(2);
  const sid = browserSessionId(browser, stack.appUrl)!;
  expect((await readSession(stack.redis, stack.sessionPrefix, sid))?.oauth?.login?.claims?.sub).toBe('alice');
});

test('state and nonce are unguessable (256 bits, base64url) and fresh for every login', async () => {
  const browser = new Browser();
  const seen = new Set<string>();
  for (let i = 0; i < 5; i++) {
    const started = await browser.request(`${stack.appUrl}/login`);
    const params = new URL(started.headers.get('location')!).searchParams;
    for (const name of ['state', 'nonce']) {
      const value = params.get(name) ?? '';
      expect(value).toMatch(/^[A-Za-z0-9_-]{43}$/);
      seen.add(value);
    }
  }
  expect(seen.size).toBe(10);
  // Only the server knows the transactions: nothing but the opaque session id went to the browser.
  const sessions = await storedSessions(stack.redis, stack.sessionPrefix);
  expect(Object.keys(sessions.get(browserSessionId(browser, stack.appUrl)!)?.oauth?.tx ?? {})).toHaveLength(5);
});

/**
 * The authorization code: redeemed at most once, never retried after a failed exchange (RFC 6749 §4.1.2, §10.5;
 * RFC 9700 §4.2.4). oidc-provider revokes the whole grant when a code is presented twice (`grant.revoked`), so a second
 * redemption could not go unnoticed; the token endpoint's request log counts every attempt.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { Redis } from 'ioredis';
import { buildApp, listen, startStack, type Listener, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startRogueStack, type RogueStack } from '../helpers/rogue-provider.js';
import {
  browserSessionId,
  errorCodeOf,
  expectRefusal,
  loginUntilCallback,
  readSession,
  storedSessions,
  withParams,
  observe,
  type Observed,
} from '../helpers/security.js';

let stack: Stack;
let observed: Observed;
let rogue: RogueStack;
/** A second instance of the same app (own process-local state, same Redis and sessions). */
let twin: Listener;
/** An instance whose single-use registry talks to a Redis that is down; sessions still work. */
let broken: Listener;
let deadRedis: Redis;

beforeAll(async () => {
  twin = await listen();
  broken = await listen();
  stack = await startStack({ extraRedirectUris: [`${broken.url}/callback`] });
  observed = observe(stack);
  twin.handle(buildApp({ redis: stack.redis, sessionPrefix: stack.sessionPrefix, auth: stack.authOptions }));
  deadRedis = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  broken.handle(
    buildApp({
      redis: stack.redis,
      sessionPrefix: stack.sessionPrefix,
      auth: { ...stack.authOptions, redirectUri: `${broken.url}/callback`, redis: deadRedis, keyPrefix: `test:${randomUUID()}:` },
    }),
  );
  rogue = await startRogueStack({ auth: { httpTimeout: 1000 } });
});
afterAll(async () => {
  await twin.close();
  await broken.close();
  // Its connection attempt was refused, so the client has already ended. disconnect() would still end the old,
  // closed socket and wait for a 'close' that never comes: ioredis's 2 s disconnectTimeout timer, which keeps the
  // test worker alive after the last file (jest's "failed to exit gracefully").
  if (deadRedis.status !== 'end') deadRedis.disconnect();
  await rogue.close();
  await stack.close();
});

function tokenRequests(): number {
  return observed.traffic.count('POST', '/token');
}

test('a replayed callback is refused: the code is redeemed once and the grant never revoked', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const before = { token: tokenRequests(), consumed: stack.provider.count('authorization_code.consumed'), revoked: stack.provider.count('grant.revoked') };

  expect((await browser.request(pending.callbackUrl)).status).toBe(302);
  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });

  expect({
    token: tokenRequests() - before.token,
    consumed: stack.provider.count('authorization_code.consumed') - before.consumed,
    revoked: stack.provider.count('grant.revoked') - before.revoked,
  }).toEqual({ token: 1, consumed: 1, revoked: 0 });
});

test('a replay with the pre-login session cookie is refused (that session was destroyed at login)', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const attacker = new Browser();
  const host = new URL(stack.appUrl).hostname;
  attacker.jar.set(host, new Map(browser.jar.get(host)));

  expect((await browser.request(pending.callbackUrl)).status).toBe(302);
  await expectRefusal(observed, () => attacker.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
  expect(await readSession(stack.redis, stack.sessionPrefix, pending.sid)).toBeUndefined();
});

test('concurrent replays of one authorization response: exactly one succeeds, one token request', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const before = { token: tokenRequests(), revoked: stack.provider.count('grant.revoked') };

  const responses = await Promise.all(Array.from({ length: 6 }, () => browser.request(pending.callbackUrl)));

  const outcomes = responses.map((r) => (r.status === 302 ? 'ok' : `${r.status} ${errorCodeOf(r)}`)).sort();
  expect(outcomes).toEqual(['400 invalid_state', '400 invalid_state', '400 invalid_state', '400 invalid_state', '400 invalid_state', 'ok']);
  expect({ token: tokenRequests() - before.token, revoked: stack.provider.count('grant.revoked') - before.revoked }).toEqual({ token: 1, revoked: 0 });
});

test('concurrent replays across two app instances sharing Redis: exactly one succeeds', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const before = { token: tokenRequests(), revoked: stack.provider.count('grant.revoked') };
  const onTwin = new URL(`${twin.url}${pending.callbackUrl.pathname}${pending.callbackUrl.search}`);

  const responses = await Promise.all([pending.callbackUrl, onTwin, pending.callbackUrl, onTwin].map((url) => browser.request(url)));

  expect(responses.filter((r) => r.status === 302)).toHaveLength(1);
  expect(responses.filter((r) => r.status === 400 && errorCodeOf(r) === 'invalid_state')).toHaveLength(3);
  expect({ token: tokenRequests() - before.token, revoked: stack.provider.count('grant.revoked') - before.revoked }).toEqual({ token: 1, revoked: 0 });
  const logins = [...(await storedSessions(stack.redis, stack.sessionPrefix)).entries()].filter(([sid, s]) => sid === browserSessionId(browser, stack.appUrl) && s.oauth?.login);
  expect(logins).toHaveLength(1);
});

test('a tampered code is refused by the server, and neither it nor the real code is tried again', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const consumed = stack.provider.count('authorization_code.consumed');

  const refused = await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { code: `${pending.code.slice(0, -4)}AAAA` })), {
    status: 400,
    code: 'token_exchange_failed',
    calls: ['POST /token'],
    secrets: pending.secrets,
  });
  expect(refused.body).toContain('invalid_grant');
  // The genuine code arrives afterwards: the state was spent on the failed attempt, so it is never redeemed.
  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
  expect(stack.provider.count('authorization_code.consumed')).toBe(consumed);
});

test('a callback without a code is refused before any token request', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { code: undefined })), {
    status: 400,
    code: 'invalid_request',
    secrets: pending.secrets,
  });
  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
});

test('a callback with an empty code is refused before any token request', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { code: '' })), {
    status: 400,
    code: 'invalid_request',
    secrets: pending.secrets,
  });
});

test('a token endpoint failure (HTTP 500) is not retried, and the state cannot be reused to retry', async () => {
  const browser = new Browser();
  rogue.rogue.onToken = async () => ({ status: 500, body: { error: 'server_error' } });
  try {
    const pending = await loginUntilCallback(rogue, browser);
    const seen = { redis: rogue.redis, sessionPrefix: rogue.sessionPrefix, traffic: rogue.traffic };

    await expectRefusal(seen, () => browser.request(pending.callbackUrl), { status: 502, code: 'idp_unreachable', calls: ['POST /token'], secrets: pending.secrets });
    await expectRefusal(seen, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
  } finally {
    rogue.rogue.reset();
  }
});

test('a token endpoint that never answers times out (504) and is not retried', async () => {
  const browser = new Browser();
  rogue.rogue.onToken = async () => 'hang';
  try {
    const pending = await loginUntilCallback(rogue, browser);
    const seen = { redis: rogue.redis, sessionPrefix: rogue.sessionPrefix, traffic: rogue.traffic };

    await expectRefusal(seen, () => browser.request(pending.callbackUrl), { status: 504, code: 'idp_unreachable', calls: ['POST /token'], secrets: pending.secrets });
  } finally {
    rogue.rogue.reset();
  }
});

test('an unreachable token endpoint fails closed (502) after one attempt, and the state cannot be reused to retry', async () => {
  // A token endpoint that accepts each connection and drops it at once: every attempt is counted, none is answered.
  let connections = 0;
  const dropping = createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  await new Promise<void>((resolve) => dropping.listen(0, '127.0.0.1', resolve));
  const { port } = dropping.address() as AddressInfo;
  rogue.rogue.metadata.token_endpoint = `http://127.0.0.1:${port}/token`;
  // A fresh app: discovery is cached per auth() instance.
  const app = await startRogueStack({ rogue: rogue.rogue });
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(app, browser);
    const seen = { redis: app.redis, sessionPrefix: app.sessionPrefix, traffic: app.traffic };

    expect(connections).toBe(0);
    await expectRefusal(seen, () => browser.request(pending.callbackUrl), { status: 502, code: 'idp_unreachable', secrets: pending.secrets });
    // Exactly one attempt reached the token endpoint: a failed exchange is not retried.
    expect(connections).toBe(1);
    await expectRefusal(seen, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
    expect(connections).toBe(1);
  } finally {
    rogue.rogue.reset();
    await app.close();
    await new Promise<void>((resolve) => dropping.close(() => resolve()));
  }
});

test('the single-use guard fails closed: Redis down at the callback lets nobody in and redeems nothing', async () => {
  const browser = new Browser();
  const app = { appUrl: broken.url, redis: stack.redis, sessionPrefix: stack.sessionPrefix };
  const pending = await loginUntilCallback(app, browser);

  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 503, code: 'session_unavailable', secrets: pending.secrets });
});

test('only the authorization code flow is requested (no implicit or hybrid response type)', async () => {
  const started = await new Browser().request(`${stack.appUrl}/login`);
  const params = new URL(started.headers.get('location')!).searchParams;

  expect(params.getAll('response_type')).toEqual(['code']);
  expect(params.has('response_mode')).toBe(false);
});

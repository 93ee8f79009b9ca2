/**
 * ID-token validation (OpenID Connect Core §3.1.3.7, §10.1.1), against a rogue authorization server that signs what
 * each test tells it to. Every failure is `invalid_id_token` (400) after exactly one token request, and no login.
 */
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import { exportJWK, generateKeyPair } from 'jose';
import { CLIENT_ID, CLIENT_SECRET } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startRogueStack, type RogueKey, type RogueStack, type TokenContext } from '../helpers/rogue-provider.js';
import { logoutClaims, sendLogoutToken } from '../logout/support.js';
import { browserSessionId, expectRefusal, loginUntilCallback, readSession, type Observed } from '../helpers/security.js';

let stack: RogueStack;
let observed: Observed;

beforeAll(async () => {
  stack = await startRogueStack();
  observed = { redis: stack.redis, sessionPrefix: stack.sessionPrefix, traffic: stack.traffic };
});
afterAll(async () => stack.close());

/** Runs a login whose token response carries the ID token `make` returns, and expects it refused. */
async function refusedWith(make: (context: TokenContext) => Promise<string | null>, app: RogueStack = stack, calls = ['POST /token']): Promise<void> {
  app.rogue.onToken = async (context) => context.respond(await make(context));
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(app, browser);
    const seen = app === stack ? observed : { redis: app.redis, sessionPrefix: app.sessionPrefix, traffic: app.traffic };
    await expectRefusal(seen, () => browser.request(pending.callbackUrl), {
      status: 400,
      code: 'invalid_id_token',
      calls,
      secrets: () => [...pending.secrets, ...app.rogue.issued],
    });
  } finally {
    app.rogue.onToken = (context) => context.respond();
  }
}

function b64uJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

test('a correctly signed ID token is accepted and its claims kept (control; fetches the key set)', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const mark = stack.traffic.requests.length;

  const landed = await browser.request(pending.callbackUrl);

  expect(landed.status).toBe(302);
  expect(stack.traffic.since(mark)).toEqual(['GET /jwks', 'POST /token']);
  const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!);
  expect(session?.oauth?.login?.claims).toMatchObject({ iss: stack.rogue.issuer, sub: 'alice', aud: CLIENT_ID });
});

test('a bad signature (another key under the published kid) is refused', async () => {
  await refusedWith((c) => stack.rogue.sign(c.claims(), { key: stack.rogue.keys.unpublished, kid: stack.rogue.keys.primary.kid }));
});

test('claims altered after signing are refused', async () => {
  await refusedWith(async (c) => {
    const [header, , signature] = (await stack.rogue.sign(c.claims())).split('.');
    return `${header}.${b64uJson({ ...c.claims(), sub: 'admin' })}.${signature}`;
  });
});

test('alg "none" (unsigned) is refused', async () => {
  await refusedWith((c) => stack.rogue.sign(c.claims(), { alg: 'none', kid: null }));
});

test('an unexpected alg (ES256 with a published key, while the server lists only RS256) is refused', async () => {
  await refusedWith((c) => stack.rogue.sign(c.claims(), { key: stack.rogue.keys.ec }));
});

test('a logout token in an unexpected alg (ES256 with a published key, while the server lists only RS256) is refused', async () => {
  // openid-client checks an ID token's alg at the exchange too; a logout token has only the library's check.
  const claims = () => logoutClaims(stack.rogue.issuer, { sub: 'nobody-logged-in' });
  const refused = await sendLogoutToken(stack.appUrl, await stack.rogue.sign(claims(), { key: stack.rogue.keys.ec }));
  expect(refused.status).toBe(400);
  expect(await refused.json()).toMatchObject({ error: 'invalid_logout_token', error_description: expect.stringMatching(/"alg"/) });
  // The same token signed with the RS256 key is accepted (control).
  expect((await sendLogoutToken(stack.appUrl, await stack.rogue.sign(claims()))).status).toBe(200);
});

test('a logout token signed with EdDSA (Ed25519) is accepted when the server lists EdDSA', async () => {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const ed: RogueKey = { kid: 'rogue-ed-1', alg: 'EdDSA', privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid: 'rogue-ed-1', alg: 'EdDSA', use: 'sig' } };
  stack.rogue.published = [...stack.rogue.published, ed];
  stack.rogue.metadata.id_token_signing_alg_values_supported = ['RS256', 'EdDSA'];
  // A fresh app: nothing cached, so it reads the set and metadata above.
  const fresh = await startRogueStack({ rogue: stack.rogue });
  try {
    const token = await stack.rogue.sign(logoutClaims(stack.rogue.issuer, { sub: 'nobody-logged-in' }), { key: ed });
    expect((await sendLogoutToken(fresh.appUrl, token)).status).toBe(200);
  } finally {
    stack.rogue.reset();
    await fresh.close();
  }
});

test("a logout token while the issuer's key set cannot be fetched is 502 idp_unreachable, not a verdict on the token", async () => {
  stack.rogue.keySetDown = true;
  // A fresh app: no key set cached, so it must fetch one.
  const fresh = await startRogueStack({ rogue: stack.rogue });
  try {
    const response = await sendLogoutToken(fresh.appUrl, await stack.rogue.sign(logoutClaims(stack.rogue.issuer, { sub: 'nobody-logged-in' })));
    expect(response.status).toBe(502);
    expect(await response.json()).toMatchObject({ error: 'idp_unreachable' });
  } finally {
    stack.rogue.reset();
    await fresh.close();
  }
});

test('HS256 with the client secret as MAC key (algorithm confusion) is refused', async () => {
  await refusedWith((c) => stack.rogue.sign(c.claims(), { alg: 'HS256', kid: null, secret: new TextEncoder().encode(CLIENT_SECRET) }));
});

test('alg "none" and HS256 are refused even when the server metadata lists them', async () => {
  stack.rogue.metadata.id_token_signing_alg_values_supported = ['RS256', 'none', 'HS256'];
  const lenient = await startRogueStack({ rogue: stack.rogue });
  try {
    // Refused before any key lookup: no key-set request.
    await refusedWith((c) => stack.rogue.sign(c.claims(), { alg: 'none', kid: null }), lenient);
    await refusedWith((c) => stack.rogue.sign(c.claims(), { alg: 'HS256', kid: null, secret: new TextEncoder().encode(CLIENT_SECRET) }), lenient);
  } finally {
    stack.rogue.reset();
    await lenient.close();
  }
});

test('a wrong iss is refused', async () => {
  await refusedWith((c) => stack.rogue.sign({ ...c.claims(), iss: 'https://attacker.example' }));
});

test('a wrong aud is refused', async () => {
  await refusedWith((c) => stack.rogue.sign({ ...c.claims(), aud: 'another-client' }));
});

test('an extra untrusted aud without azp is refused', async () => {
  await refusedWith((c) => stack.rogue.sign({ ...c.claims(), aud: [CLIENT_ID, 'another-client'] }));
});

test('several audiences with an azp that is not this client are refused', async () => {
  await refusedWith((c) => stack.rogue.sign({ ...c.claims(), aud: [CLIENT_ID, 'another-client'], azp: 'another-client' }));
});

test('an expired ID token (beyond the clock tolerance) is refused', async () => {
  const now = Math.floor(Date.now() / 1000);
  await refusedWith((c) => stack.rogue.sign({ ...c.claims(), iat: now - 600, exp: now - 120 }));
});

test('an ID token not yet valid (nbf in the future) is refused', async () => {
  const now = Math.floor(Date.now() / 1000);
  await refusedWith((c) => stack.rogue.sign({ ...c.claims(), nbf: now + 600 }));
});

test.each(['iat', 'exp', 'sub', 'iss', 'aud'])('an ID token without %s is refused', async (claim) => {
  await refusedWith((c) => {
    const claims = c.claims();
    delete claims[claim];
    return stack.rogue.sign(claims);
  });
});

test('an ID token without the nonce is refused', async () => {
  await refusedWith((c) => {
    const claims = c.claims();
    delete claims.nonce;
    return stack.rogue.sign(claims);
  });
});

test('an ID token with another nonce (replayed from another login) is refused', async () => {
  await refusedWith((c) => stack.rogue.sign({ ...c.claims(), nonce: 'bm9uY2UtZnJvbS1hbm90aGVyLWxvZ2luLXJlcGxheWVk' }));
});

test('a token response without an ID token (scope openid) is refused', async () => {
  await refusedWith(async () => null);
});

test('an ID token that is not a JWT is refused', async () => {
  await refusedWith(async () => 'not-a-jwt');
});

test('the key set unreachable at login: 502 idp_unreachable, no login (the signature cannot be checked)', async () => {
  // A fresh app on the same server: nothing cached yet, so the check has to fetch the keys.
  const fresh = await startRogueStack({ rogue: stack.rogue });
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(fresh, browser);
    stack.rogue.keySetDown = true;
    const seen: Observed = { redis: fresh.redis, sessionPrefix: fresh.sessionPrefix, traffic: fresh.traffic };
    await expectRefusal(seen, () => browser.request(pending.callbackUrl), {
      status: 502,
      code: 'idp_unreachable',
      calls: ['GET /jwks', 'POST /token'],
      secrets: () => [...pending.secrets, ...stack.rogue.issued],
    });
  } finally {
    stack.rogue.reset();
    await fresh.close();
  }
});

test('unknown kid: the key set is re-fetched once, a rotated key is accepted, an unknown one refused', async () => {
  // jose re-fetches the key set for an unknown kid at most every 30 seconds, so that a flood of forged kids cannot
  // turn into a flood of JWKS requests. Only Date is faked, to age the cache past that cooldown.
  jest.useFakeTimers({
    doNotFake: ['hrtime', 'nextTick', 'performance', 'queueMicrotask', 'setImmediate', 'clearImmediate', 'setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'],
    advanceTimers: true,
  });
  try {
    stack.rogue.published = [stack.rogue.keys.rotated];
    stack.rogue.signingKey = stack.rogue.keys.rotated;
    jest.setSystemTime(Date.now() + 61_000);

    const browser = new Browser();
    const pending = await loginUntilCallback(stack, browser);
    const mark = stack.traffic.requests.length;
    expect((await browser.request(pending.callbackUrl)).status).toBe(302);
    expect(stack.traffic.since(mark)).toEqual(['GET /jwks', 'POST /token']);

    // A kid in no key set, a minute later: one re-fetch, then refused.
    jest.setSystemTime(Date.now() + 61_000);
    await refusedWith((c) => stack.rogue.sign(c.claims(), { key: stack.rogue.keys.unpublished, kid: 'rogue-rsa-unknown' }), stack, ['GET /jwks', 'POST /token']);
    // Right away again: refused from the fresh cache, without another key-set request.
    await refusedWith((c) => stack.rogue.sign(c.claims(), { key: stack.rogue.keys.unpublished, kid: 'rogue-rsa-unknown' }));
  } finally {
    jest.useRealTimers();
    stack.rogue.reset();
  }
});

test('no kid while the key set holds several keys for the alg: each is tried, the one that verifies is used (ID and logout tokens)', async () => {
  // OIDC Core §10.1 wants a kid whenever the set has several keys; servers in the middle of a rotation leave it out.
  const withoutKid = (key: RogueKey): RogueKey => ({ ...key, publicJwk: { ...key.publicJwk, kid: undefined } });
  const { primary, rotated, unpublished, ec } = stack.rogue.keys;
  stack.rogue.published = [withoutKid(primary), withoutKid(rotated), ec];
  // A fresh app: nothing cached, so it reads the set above.
  const fresh = await startRogueStack({ rogue: stack.rogue });
  try {
    // Signed with the second RSA key, so the first one tried fails.
    stack.rogue.onToken = async (c) => c.respond(await stack.rogue.sign(c.claims(), { key: rotated, kid: null }));
    const browser = new Browser();
    const pending = await loginUntilCallback(fresh, browser);
    expect((await browser.request(pending.callbackUrl)).status).toBe(302);
    const sessionId = browserSessionId(browser, fresh.appUrl)!;
    const login = (await readSession(fresh.redis, fresh.sessionPrefix, sessionId))?.oauth?.login;
    expect(login?.claims).toMatchObject({ iss: stack.rogue.issuer, sub: 'alice', aud: CLIENT_ID });

    // A logout token from a key in no set is refused; one from the second key ends the login.
    const logout = (key: RogueKey) => stack.rogue.sign({ ...logoutClaims(stack.rogue.issuer, { sub: 'alice' }) }, { key, kid: null });
    const forged = await sendLogoutToken(fresh.appUrl, await logout(unpublished));
    expect(forged.status).toBe(400);
    expect(await forged.json()).toMatchObject({ error: 'invalid_logout_token', error_description: expect.stringMatching(/signature verification failed/) });
    expect((await readSession(fresh.redis, fresh.sessionPrefix, sessionId))?.oauth?.login).toEqual(login);
    // The first key verifies this one, so its wrong audience is the answer: no other key is tried after a signature held.
    const otherAudience = await stack.rogue.sign({ ...logoutClaims(stack.rogue.issuer, { sub: 'alice' }), aud: 'another-client' }, { key: primary, kid: null });
    const misaddressed = await sendLogoutToken(fresh.appUrl, otherAudience);
    expect(misaddressed.status).toBe(400);
    expect(await misaddressed.json()).toMatchObject({ error: 'invalid_logout_token', error_description: expect.stringMatching(/"aud"/) });
    expect((await sendLogoutToken(fresh.appUrl, await logout(rotated))).status).toBe(200);
    expect((await readSession(fresh.redis, fresh.sessionPrefix, sessionId))?.oauth?.login).toBeUndefined();

    // An ID token from a key in no set is refused after every candidate failed.
    await refusedWith((c) => stack.rogue.sign(c.claims(), { key: unpublished, kid: null }), fresh, ['POST /token']);
  } finally {
    stack.rogue.reset();
    await fresh.close();
  }
});

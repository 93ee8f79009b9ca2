/**
 * Secrets: tokens, codes, PKCE verifiers, nonces and the client secret never appear in error messages, error JSON,
 * `util.inspect` of errors or of `req.auth`, responses, or anything printed (RFC 9700 §4.3.2, §4.14 on leaks through
 * logs; RFC 6819 §5.1.4.1.3). oauth4webapi attaches whole token responses and raw JWTs to its errors: the library keeps
 * a sanitised copy as `AuthError.cause`, which is what an app's `console.error(err)` prints.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import * as client from 'openid-client';
import { auth, AuthError } from '../../lib/index.js';
import { storeUnavailable } from '../../lib/store-errors.js';
import { exchangeError, refreshError } from '../../lib/upstream.js';
import { CLIENT_ID, CLIENT_SECRET, startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startRogueStack, type RogueStack, type TokenContext, type TokenReply } from '../helpers/rogue-provider.js';
import {
  browserSessionId,
  captureOutput,
  expectRefusal,
  inspectDeep,
  loginUntilCallback,
  readSession,
  recordTraffic,
  secretsOfLogin,
} from '../helpers/security.js';

let rogue: RogueStack;
let stack: Stack;

beforeAll(async () => {
  rogue = await startRogueStack({
    auth: { httpTimeout: 1000 },
    routes: (app) => {
      // What a careless app might do with req.auth.
      app.get('/debug', (req, res) => res.json({ json: JSON.stringify(req.auth), inspected: inspectDeep(req.auth), template: `${String(req.auth)}` }));
    },
  });
  stack = await startStack();
  // Warm the key set, so that every signature failure below is a refusal from the cache (no extra JWKS request).
  const warm = new Browser();
  const pending = await loginUntilCallback(rogue, warm);
  expect((await warm.request(pending.callbackUrl)).status).toBe(302);
});
afterAll(async () => {
  await stack.close();
  await rogue.close();
});

/** A token endpoint that echoes everything it was sent in its error description (a careless or hostile server). */
const echoing = async (c: TokenContext): Promise<TokenReply> => ({
  status: 400,
  body: {
    error: 'invalid_grant',
    // The nonce was never sent to the token endpoint, but the server knows it: it was in the authorization request.
    // The code twice: every occurrence must go, not only the first.
    error_description: `code ${c.form.get('code')} with verifier ${c.form.get('code_verifier')}, nonce ${String(c.claims().nonce)} and ${CLIENT_SECRET} refused (code ${c.form.get('code')})`,
  },
});

async function badSignature(c: TokenContext): Promise<TokenReply> {
  return c.respond(await rogue.rogue.sign(c.claims(), { key: rogue.rogue.keys.unpublished }));
}

const FAILURES: Array<[string, (c: TokenContext) => Promise<TokenReply>, number, string]> = [
  ['the token endpoint echoes the code, verifier, nonce and client secret', echoing, 400, 'token_exchange_failed'],
  ['the ID token signature is bad', badSignature, 400, 'invalid_id_token'],
  ['the token response lacks the ID token', async (c) => c.respond(null), 400, 'invalid_id_token'],
  ['the ID token is not a JWT', async (c) => c.respond('not-a-jwt-but-secret-ish'), 400, 'invalid_id_token'],
  ['the ID token has a wrong audience', async (c) => c.respond(await rogue.rogue.sign({ ...c.claims(), aud: 'other' })), 400, 'invalid_id_token'],
  ['the token type is unknown', async (c) => ({ status: 200, body: { access_token: `at-${c.form.get('code')}`, token_type: 'mac' } }), 400, 'token_exchange_failed'],
  ['the token endpoint never answers', async () => 'hang', 504, 'idp_unreachable'],
];

test.each(FAILURES)('the refusal when %s shows and prints no secret', async (_name, onToken, status, code) => {
  rogue.rogue.onToken = onToken;
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(rogue, browser);
    await expectRefusal({ redis: rogue.redis, sessionPrefix: rogue.sessionPrefix, traffic: rogue.traffic }, () => browser.request(pending.callbackUrl), {
      status,
      code,
      calls: ['POST /token'],
      secrets: () => [...pending.secrets, ...rogue.rogue.issued],
    });
  } finally {
    rogue.rogue.reset();
  }
});

/** Runs a code exchange with openid-client directly against the rogue server, and returns what it threw. */
async function rawExchangeFailure(onToken: (c: TokenContext) => Promise<TokenReply>): Promise<{ raw: unknown; secrets: string[] }> {
  rogue.rogue.onToken = onToken;
  try {
    const configuration = await client.discovery(new URL(rogue.rogue.issuer), CLIENT_ID, undefined, client.ClientSecretBasic(CLIENT_SECRET), {
      execute: [client.allowInsecureRequests],
      timeout: 1,
    });
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const authorization = client.buildAuthorizationUrl(configuration, {
      redirect_uri: 'http://127.0.0.1:9/callback',
      scope: 'openid',
      state,
      nonce,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const redirect = await fetch(authorization, { redirect: 'manual' });
    const callback = new URL(redirect.headers.get('location')!);
    try {
      await client.authorizationCodeGrant(configuration, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true });
    } catch (raw) {
      return { raw, secrets: [callback.searchParams.get('code')!, verifier, nonce, CLIENT_SECRET, ...rogue.rogue.issued] };
    }
    throw new Error('the exchange succeeded');
  } finally {
    rogue.rogue.reset();
  }
}

function everyRendering(err: AuthError): string {
  return [err.message, JSON.stringify(err), String(err), err.stack ?? '', inspectDeep(err), inspectDeep(err.cause)].join('\n');
}

/**
 * The failures that reach the library as an openid-client error. A bad signature does not: openid-client leaves
 * signatures to the library (lib/keys.ts), whose refusal carries no cause at all (the end-to-end test above covers it).
 */
const RAW_FAILURES = FAILURES.filter(([, onToken]) => onToken !== badSignature);

test.each(RAW_FAILURES)('the AuthError when %s: no secret in message, JSON or util.inspect (cause included)', async (_name, onToken, status, code) => {
  const { raw, secrets } = await rawExchangeFailure(onToken);

  const err = exchangeError(raw, secrets.slice(0, 4));

  expect([err.status, err.code]).toEqual([status, code]);
  const rendered = everyRendering(err);
  for (const secret of secrets) expect(rendered.includes(secret) ? `leaks ${secret}` : 'clean').toBe('clean');
  // What is kept still explains the failure.
  expect(err.cause).toBeInstanceOf(Error);
  const expectedKeys = ['error', 'error_description', 'status', ...(err.error === undefined ? [] : ['upstream_error']), ...(err.errorDescription === undefined ? [] : ['upstream_error_description'])].sort();
  expect(Object.keys(JSON.parse(JSON.stringify(err)) as object).sort()).toEqual(expectedKeys);
  // toJSON() itself, as an app that reads or spreads it sees it: no key left undefined.
  expect(Object.keys(err.toJSON()).sort()).toEqual(expectedKeys);
});

test('the raw openid-client error of a token response without an ID token does carry the tokens (why the cause is sanitised)', async () => {
  const { raw, secrets } = await rawExchangeFailure(async (c) => c.respond(null));
  const accessToken = secrets.findLast((s) => s.startsWith('at-'))!;

  expect(inspectDeep(raw)).toContain(accessToken);
  expect(everyRendering(exchangeError(raw))).not.toContain(accessToken);
});

test('a refresh failure keeps the same sanitised cause: the token response it carried never reaches the AuthError', async () => {
  // oauth4webapi processes refresh responses with the same code as code-exchange responses, so the raw error is alike.
  const { raw, secrets } = await rawExchangeFailure(async (c) => c.respond(null));
  const accessToken = secrets.findLast((s) => s.startsWith('at-'))!;

  expect(inspectDeep(raw)).toContain(accessToken);
  const err = refreshError(raw, secrets);
  expect(err).toBeInstanceOf(AuthError);
  expect(everyRendering(err)).not.toContain(accessToken);
});

test('a Redis failure keeps a sanitised cause: ioredis errors carry the failed command arguments (session data, tokens)', async () => {
  const secret = 'rt-secret-refresh-token-value-0123456789';
  // A real reply error from the test Redis: an invalid expiry on a SET whose value is a token set.
  const raw = await stack.redis.set(`${String(stack.authOptions.keyPrefix)}secrets-probe`, JSON.stringify({ refreshToken: secret }), 'PX', -1).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(inspectDeep(raw)).toContain(secret);
  const err = storeUnavailable(raw);
  expect(err).toMatchObject({ code: 'session_unavailable', status: 503 });
  expect(everyRendering(err)).not.toContain(secret);
});

test('an upstream error description is redacted, not dropped: the rest of it still reaches the page', async () => {
  rogue.rogue.onToken = echoing;
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(rogue, browser);
    const refused = await browser.request(pending.callbackUrl);
    expect(refused.body).toContain('[redacted]');
    expect(refused.body).toContain('invalid_grant');
  } finally {
    rogue.rogue.reset();
  }
});

test('req.auth serialises and prints without tokens or the client secret', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(rogue, browser);
  expect((await browser.request(pending.callbackUrl)).status).toBe(302);
  const session = await readSession(rogue.redis, rogue.sessionPrefix, browserSessionId(browser, rogue.appUrl)!);
  const tokens = await secretsOfLogin(rogue, session);

  const debug = await browser.request(`${rogue.appUrl}/debug`, { headers: { accept: 'application/json' } });

  expect(tokens.length).toBeGreaterThanOrEqual(3);
  expect(JSON.parse(JSON.parse(debug.body).json as string)).toEqual({ isAuthenticated: true });
  for (const secret of [...tokens, CLIENT_SECRET]) expect(debug.body.includes(secret) ? `leaks ${secret}` : 'clean').toBe('clean');
});

test('a complete login prints nothing that contains a token, the code or the verifier', async () => {
  const observed = recordTraffic(stack.provider.server);
  const browser = new Browser();
  const output = captureOutput();
  let pending;
  try {
    pending = await loginUntilCallback(stack, browser);
    expect((await browser.request(pending.callbackUrl)).status).toBe(302);
    expect((await browser.request(`${stack.appUrl}/me`)).status).toBe(200);
  } finally {
    output.restore();
  }
  const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!);
  const secrets = [...pending.secrets, ...(await secretsOfLogin(stack, session)), CLIENT_SECRET];
  expect(observed.count('POST', '/token')).toBe(1);
  for (const secret of secrets) expect(output.text().includes(secret) ? `printed ${secret}` : 'clean').toBe('clean');
});

test('option errors never echo the client secret', () => {
  const attempts: Array<Record<string, unknown>> = [
    { clientAuthMethod: 'none' },
    { clientAuthMethod: 'private_key_jwt' },
    { clientSecrett: CLIENT_SECRET },
    { issuer: `https://user:${CLIENT_SECRET}@idp.example.com` },
    { clientSecret: CLIENT_SECRET, authorizationParams: { client_secret: 42 } },
  ];
  for (const extra of attempts) {
    let message = '';
    try {
      auth({ ...stack.authOptions, ...extra } as Parameters<typeof auth>[0]);
    } catch (err) {
      message = `${String(err)} ${inspectDeep(err)}`;
    }
    expect(message).toMatch(/^TypeError: express-oauth-pkce:/);
    expect(message.includes(CLIENT_SECRET) ? `echoes the secret: ${JSON.stringify(extra)}` : 'clean').toBe('clean');
  }
});

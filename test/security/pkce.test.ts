/**
 * PKCE (RFC 7636; RFC 9700 §2.1.1, §4.8): S256 on every request, a fresh verifier per transaction, never `plain`,
 * never a silent downgrade, and a wrong verifier is refused by the server and reported clearly.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { auth } from '../../lib/index.js';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { RogueProvider, startRogueStack } from '../helpers/rogue-provider.js';
import { browserSessionId, expectRefusal, loginUntilCallback, readSession, observe, type Observed } from '../helpers/security.js';

let stack: Stack;
let observed: Observed;
let rogue: RogueProvider;

beforeAll(async () => {
  stack = await startStack();
  observed = observe(stack);
  rogue = await RogueProvider.start();
});
afterAll(async () => {
  await rogue.close();
  await stack.close();
});

const s256 = (verifier: string) => createHash('sha256').update(verifier).digest('base64url');

test('every authorization request carries an S256 challenge of the transaction verifier, never plain', async () => {
  const browser = new Browser();
  const started = await browser.request(`${stack.appUrl}/login`);
  const params = new URL(started.headers.get('location')!).searchParams;
  const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!);
  const tx = session?.oauth?.tx?.[params.get('state')!];

  expect(params.getAll('code_challenge_method')).toEqual(['S256']);
  expect(params.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  // RFC 7636 §4.1: 43 to 128 characters of the unreserved set; openid-client makes 32 random bytes (43 characters).
  expect(tx?.verifier).toMatch(/^[A-Za-z0-9_~.-]{43,128}$/);
  expect(params.get('code_challenge')).toBe(s256(tx!.verifier));
});

test('each transaction has a fresh verifier, and only its hash ever leaves the server', async () => {
  const browser = new Browser();
  const challenges: string[] = [];
  const pages: string[] = [];
  for (let i = 0; i < 3; i++) {
    const started = await browser.request(`${stack.appUrl}/login`);
    challenges.push(new URL(started.headers.get('location')!).searchParams.get('code_challenge')!);
    pages.push(started.headers.get('location')!, started.body, ...started.headers.getSetCookie());
  }
  const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!);
  const verifiers = Object.values(session?.oauth?.tx ?? {}).map((tx) => tx.verifier);

  expect(new Set(challenges).size).toBe(3);
  expect(new Set(verifiers).size).toBe(3);
  expect(verifiers.map(s256).sort()).toEqual([...challenges].sort());
  for (const verifier of verifiers) expect(pages.join('\n')).not.toContain(verifier);
});

test('the token request carries the verifier of the transaction the state names', async () => {
  const app = await startRogueStack({ rogue });
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(app, browser);
    const mark = rogue.requests.length;
    expect((await browser.request(pending.callbackUrl)).status).toBe(302);

    const tokenRequest = rogue.requests.slice(mark).find((r) => r.path === '/token');
    const form = new URLSearchParams(tokenRequest?.body);
    const authorization = rogue.requests.filter((r) => r.path === '/authorize').at(-1)!;
    expect(form.get('code_verifier')).toBe(pending.verifier);
    expect(s256(form.get('code_verifier')!)).toBe(new URLSearchParams(authorization.search).get('code_challenge'));
  } finally {
    await app.close();
  }
});

test('a wrong verifier (a code from another transaction: code injection) is refused by the server and reported', async () => {
  const browser = new Browser();
  const first = await loginUntilCallback(stack, browser);
  const second = await loginUntilCallback(stack, browser);
  const injected = new URL(first.callbackUrl);
  injected.searchParams.set('code', second.code);

  const refused = await expectRefusal(observed, () => browser.request(injected), {
    status: 400,
    code: 'token_exchange_failed',
    calls: ['POST /token'],
    secrets: [...first.secrets, ...second.secrets],
  });
  expect(refused.body).toContain('invalid_grant');
});

test.each<[string, string[], string]>([
  ['lists PKCE methods without S256', ['plain'], 'plain'],
  // An empty list is a list: unlike an absent one, it says the server takes no challenge method.
  ['lists no PKCE method at all ([])', [], '(code_challenge_methods_supported: none)'],
])('a server whose metadata %s is refused, naming what it lists: no authorization request, no session', async (_case, methods, named) => {
  rogue.metadata.code_challenge_methods_supported = methods;
  const app = await startRogueStack({ rogue });
  try {
    const seen = { redis: app.redis, sessionPrefix: app.sessionPrefix, traffic: rogue.traffic };
    const refused = await expectRefusal(seen, () => app.browser.request(`${app.appUrl}/login`), {
      status: 502,
      code: 'discovery_failed',
      calls: ['GET /.well-known/openid-configuration'],
    });
    expect(refused.body).toContain(named);
    expect(refused.headers.getSetCookie()).toEqual([]);
    // Not cached as acceptable either: the next attempt is refused the same way.
    await expectRefusal(seen, () => app.browser.request(`${app.appUrl}/login`), {
      status: 502,
      code: 'discovery_failed',
      calls: ['GET /.well-known/openid-configuration'],
    });
  } finally {
    rogue.reset();
    await app.close();
  }
});

test('a server that does not advertise PKCE methods still gets S256 (no downgrade to plain or none)', async () => {
  delete rogue.metadata.code_challenge_methods_supported;
  const app = await startRogueStack({ rogue });
  try {
    const started = await app.browser.request(`${app.appUrl}/login`);
    const params = new URL(started.headers.get('location')!).searchParams;
    expect([params.get('code_challenge_method'), params.get('code_challenge')?.length]).toEqual(['S256', 43]);
  } finally {
    rogue.reset();
    await app.close();
  }
});

test.each(['code_challenge_method', 'code_challenge', 'state', 'nonce', 'response_type', 'redirect_uri', 'response_mode'])(
  'authorizationParams cannot override the protocol parameter %s (refused at startup)',
  (name) => {
    expect(() => auth({ ...stack.authOptions, authorizationParams: { [name]: name === 'code_challenge_method' ? 'plain' : 'x' } })).toThrow(
      new RegExp(`authorizationParams\\.${name}.*set by the library`),
    );
  },
);

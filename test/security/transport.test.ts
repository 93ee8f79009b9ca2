/**
 * Transport: responses that carry protocol values are never cached and never leak through a Referer (RFC 9700
 * §4.2.4, §4.3.2; RFC 6749 §10.3); tokens stay on the server and are never put in a URL (RFC 6750 §2.3, RFC 9700
 * §4.3.2); client credentials travel in the Authorization header (RFC 6749 §2.3.1); TLS is required unless
 * explicitly waived for development (RFC 6749 §3.1, §3.2).
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { auth } from '../../lib/index.js';
import { CLIENT_SECRET } from '../helpers/app.js';
import { Browser, type BrowserResponse } from '../helpers/browser.js';
import { startRogueStack, type RogueStack } from '../helpers/rogue-provider.js';
import { browserSessionId, loginUntilCallback, readSession, secretsOfLogin, withParams } from '../helpers/security.js';

let stack: RogueStack;

beforeAll(async () => {
  stack = await startRogueStack();
});
afterAll(async () => stack.close());

function expectNoStore(response: BrowserResponse): void {
  // Pragma for HTTP/1.0 caches, which do not know Cache-Control.
  expect({ cache: response.headers.get('cache-control'), pragma: response.headers.get('pragma'), referrer: response.headers.get('referrer-policy') }).toEqual({
    cache: 'no-store',
    pragma: 'no-cache',
    referrer: 'no-referrer',
  });
}

test('the login redirect (state, nonce, challenge in its Location) is not cached and sends no Referer', async () => {
  const started = await new Browser().request(`${stack.appUrl}/login`);

  expect(started.status).toBe(302);
  expectNoStore(started);
});

test('the successful callback response is not cached and sends no Referer (the code stays out of the next page)', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  const landed = await browser.request(pending.callbackUrl);

  expect(landed.status).toBe(302);
  expectNoStore(landed);
});

test('a refused callback response is not cached and sends no Referer either', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  const refused = await browser.request(withParams(pending.callbackUrl, { state: 'x'.repeat(43) }));

  expect(refused.status).toBe(400);
  expectNoStore(refused);
});

test('tokens never reach the browser: no response of the app carries one, the cookie is an opaque id', async () => {
  const browser = new Browser();
  const seen: string[] = [];
  const record = (r: BrowserResponse) => seen.push(JSON.stringify([...r.headers]), r.body);
  const pending = await loginUntilCallback(stack, browser);
  record(await browser.request(pending.callbackUrl));
  record(await browser.request(`${stack.appUrl}/`));
  record(await browser.request(`${stack.appUrl}/me`));
  const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!);
  const tokens = await secretsOfLogin(stack, session);

  expect(tokens.length).toBeGreaterThanOrEqual(3); // access, refresh and ID token are all stored server-side
  for (const token of tokens) expect(seen.join('\n')).not.toContain(token);
  expect(decodeURIComponent(browser.cookie(new URL(stack.appUrl).hostname, 'connect.sid')!.value)).toMatch(/^s:[\w-]+\.[\w+/=-]+$/);
});

test('the token request: POST, form body, client credentials in the Authorization header, nothing in the URL', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const mark = stack.rogue.requests.length;
  expect((await browser.request(pending.callbackUrl)).status).toBe(302);

  const tokenRequests = stack.rogue.requests.slice(mark).filter((r) => r.path === '/token');
  expect(tokenRequests).toHaveLength(1);
  const [tokenRequest] = tokenRequests;
  const form = new URLSearchParams(tokenRequest!.body);
  expect(tokenRequest!.method).toBe('POST');
  expect(tokenRequest!.search).toBe('');
  expect(tokenRequest!.headers['content-type']).toMatch(/^application\/x-www-form-urlencoded/);
  expect(tokenRequest!.headers.authorization).toMatch(/^Basic /);
  expect([...form.keys()].sort()).toEqual(['code', 'code_verifier', 'grant_type', 'redirect_uri']);
  expect(form.get('code')).toBe(pending.code);
  expect(tokenRequest!.body).not.toContain(encodeURIComponent(CLIENT_SECRET));
});

test('no code, token, verifier or secret ever appears in a URL the library requests', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  expect((await browser.request(pending.callbackUrl)).status).toBe(302);

  const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!);
  const secrets = [...stack.rogue.issued, pending.verifier, CLIENT_SECRET, ...(await secretsOfLogin(stack, session))];
  // The browser carries the code to the app's callback; the library itself never puts one in a URL.
  const urls = stack.rogue.requests.filter((r) => r.path !== '/authorize').map((r) => `${r.path}${r.search}`);
  for (const secret of secrets) for (const url of urls) expect(url).not.toContain(secret);
});

test('the authorization request (front channel) carries only public parameters', async () => {
  const started = await new Browser().request(`${stack.appUrl}/login`);
  const params = new URL(started.headers.get('location')!).searchParams;

  expect([...params.keys()].sort()).toEqual(['client_id', 'code_challenge', 'code_challenge_method', 'nonce', 'redirect_uri', 'response_type', 'scope', 'state']);
});

test('an http issuer is refused at startup unless allowInsecureRequests is set', () => {
  const options = { ...stack.authOptions, issuer: 'http://idp.example.com' };
  delete (options as { allowInsecureRequests?: boolean }).allowInsecureRequests;

  expect(() => auth(options)).toThrow(/`issuer`.*uses http:.*https/);
});

test('an http redirectUri on a public host is refused at startup unless allowInsecureRequests is set', () => {
  const options = { ...stack.authOptions, issuer: 'https://idp.example.com', redirectUri: 'http://app.example.com/callback' };
  delete (options as { allowInsecureRequests?: boolean }).allowInsecureRequests;

  expect(() => auth(options)).toThrow(/`redirectUri`.*uses http:/);
});

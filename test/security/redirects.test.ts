/**
 * Redirects: `returnTo` never leaves the origin (RFC 9700 §4.11, open redirectors), and the `redirect_uri` sent in the
 * authorization and token requests is the configured one, whatever the request's Host or X-Forwarded-* headers say
 * (RFC 6749 §4.1.3; RFC 9700 §4.1). Every `returnTo` case is a complete login through the real provider.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startRogueStack, type RogueStack } from '../helpers/rogue-provider.js';
import { loginUntilCallback, withParams } from '../helpers/security.js';

let stack: Stack;
let rogue: RogueStack;
/** One browser for every case: after the first login the provider approves at once, which keeps the table fast. */
const browser = new Browser();

beforeAll(async () => {
  stack = await startStack();
  rogue = await startRogueStack();
});
afterAll(async () => {
  await rogue.close();
  await stack.close();
});

/** Logs in with `returnTo` and returns the raw Location of the callback's redirect. */
async function landing(returnTo: string): Promise<string> {
  const pending = await loginUntilCallback(stack, browser, { returnTo });
  const response = await browser.request(pending.callbackUrl);
  expect(response.status).toBe(302);
  return response.headers.get('location') ?? '';
}

/** What a browser would do with the Location: it must stay on the app's origin, as a path. */
function expectSameOriginPath(location: string): void {
  // Raw header: a path, not protocol-relative (`//`), not `/\` (browsers read `\` as `/`), no controls or spaces.
  expect(location).toMatch(/^\/(?![/\\])[^\s\\\u0000-\u001F\u007F]*$/);
  expect(new URL(location, stack.appUrl).origin).toBe(stack.appUrl);
  // Still a same-origin path after any number of percent-decodings (an app or proxy that decodes it must not be
  // fooled), also once dot segments are resolved (`/.//host` is `//host`).
  let decoded = location;
  for (let round = 0; round < 3; round++) {
    decoded = decodeURIComponent(decoded);
    expect(decoded).toMatch(/^\/(?![\s]*[/\\])/);
    expect(new URL(decoded, stack.appUrl).origin).toBe(stack.appUrl);
    expect(new URL(decoded, stack.appUrl).pathname).toMatch(/^\/(?![/\\])/);
  }
}

const EVIL = 'evil.example';

test.each([
  ['protocol-relative', `//${EVIL}`],
  ['protocol-relative with a path', `//${EVIL}/login`],
  ['triple slash', `///${EVIL}`],
  ['slash-backslash', `/\\${EVIL}`],
  ['backslash-slash', `\\/${EVIL}`],
  ['double backslash', `\\\\${EVIL}`],
  ['slash, backslash, slash', `/\\/${EVIL}`],
  ['dot segment to a protocol-relative path', `/.//${EVIL}`],
  ['encoded dot segments', `/%2e%2e//${EVIL}`],
  ['absolute https URL', `https://${EVIL}/`],
  ['absolute http URL, upper case', `HTTP://${EVIL}/`],
  ['scheme without slashes', `https:${EVIL}`],
  ['absolute URL of the app itself', '__APP__/me'],
  ['userinfo trick', `https://app@${EVIL}`],
  ['javascript:', 'javascript:alert(document.domain)'],
  ['javascript: in mixed case', 'JaVaScRiPt:alert(1)'],
  ['data:', 'data:text/html,<script>alert(1)</script>'],
  ['percent-encoded protocol-relative', `%2F%2F${EVIL}`],
  ['double-encoded protocol-relative', `%252F%252F${EVIL}`],
  ['slash then percent-encoded slash', `/%2F${EVIL}`],
  ['slash then percent-encoded backslash', `/%5C${EVIL}`],
  ['slash then percent-encoded tab and slash', `/%09/${EVIL}`],
  ['slash then double-encoded slash', `/%252F${EVIL}`],
  ['dot segment then percent-encoded slash', `/.%2F/${EVIL}`],
  ['dot segment then two percent-encoded slashes', `/.%2F%2F${EVIL}`],
  ['encoded dot segment then percent-encoded slash', `/%2e%2F/${EVIL}`],
  ['dot-dot segment then two percent-encoded slashes', `/x/..%2F%2F${EVIL}`],
  ['dot segment then percent-encoded backslash', `/.%5C/${EVIL}`],
  ['dot segment then double-encoded slash', `/.%252F/${EVIL}`],
  ['tab inside the slashes', `/\t/${EVIL}`],
  ['newline inside the slashes', `/\n/${EVIL}`],
  ['CRLF (header injection)', `/\r\nSet-Cookie: a=b`],
  ['leading space', ` //${EVIL}`],
  ['leading tab', `\t//${EVIL}`],
  ['NUL byte', `/\u0000/${EVIL}`],
  ['fullwidth solidi', `\uFF0F\uFF0F${EVIL}`],
  ['ideographic full stop host', `//${EVIL.replace('.', '\u3002')}`],
  ['very long value', `/${'a'.repeat(3000)}`],
])('returnTo %s never leads off the origin', async (_name, payload) => {
  const location = await landing(payload.replace('__APP__', stack.appUrl));

  expectSameOriginPath(location);
  expect(location).not.toContain(EVIL);
  // Not merely kept on the origin by URL parsing: refused outright.
  expect(location).toBe('/');
});

test('a same-origin returnTo keeps its path, query and fragment (control)', async () => {
  expect(await landing('/me?tab=orders&x=%2F%2Fy#section')).toBe('/me?tab=orders&x=%2F%2Fy#section');
  expect(await landing('/a/b/../c')).toBe('/a/c');
  // Encoded characters that decode to nothing off-origin are kept as they are.
  expect(await landing('/search?q=a%2Fb')).toBe('/search?q=a%2Fb');
  expect(await landing('/files/a%20b')).toBe('/files/a%20b');
  expect(await landing('/a%2Fb')).toBe('/a%2Fb');
});

test('a returnTo added to the authorization response is ignored: only the transaction decides', async () => {
  const pending = await loginUntilCallback(stack, browser, { returnTo: '/mine' });
  const response = await browser.request(withParams(pending.callbackUrl, { returnTo: `//${EVIL}`, redirect_uri: `https://${EVIL}/` }));

  expect([response.status, response.headers.get('location')]).toEqual([302, '/mine']);
});

/** A raw request with headers fetch would not send as given (Host). */
function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; location: string | undefined; cookie: string[] }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, cookie: res.headers['set-cookie'] ?? [] }));
    });
    req.on('error', reject);
    req.end();
  });
}

const SPOOFED = { host: `${EVIL}`, 'x-forwarded-host': `${EVIL}`, 'x-forwarded-proto': 'https', forwarded: `host=${EVIL};proto=https` };

test('the authorization request carries the configured redirect_uri whatever Host and X-Forwarded-* say', async () => {
  const started = await rawGet(`${stack.appUrl}/login`, SPOOFED);

  expect(started.status).toBe(302);
  expect(new URL(started.location!).searchParams.getAll('redirect_uri')).toEqual([String(stack.authOptions.redirectUri)]);
});

test('the token request carries the configured redirect_uri whatever Host and X-Forwarded-* say at the callback', async () => {
  const rogueBrowser = new Browser();
  const pending = await loginUntilCallback(rogue, rogueBrowser);
  const mark = rogue.rogue.requests.length;
  const cookie = rogueBrowser.cookieHeader(pending.callbackUrl);

  const landed = await rawGet(pending.callbackUrl.href, { ...SPOOFED, cookie });

  expect(landed.status).toBe(302);
  const tokenRequest = rogue.rogue.requests.slice(mark).find((r) => r.path === '/token');
  expect(new URLSearchParams(tokenRequest?.body).getAll('redirect_uri')).toEqual([String(rogue.authOptions.redirectUri)]);
});

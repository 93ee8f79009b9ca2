/**
 * Logout CSRF (RFC 9700 §4.1 ff. on CSRF; OIDC RP-Initiated Logout §2 leaves it to the RP): only a same-origin POST
 * ends a login. `GET` never does (any `<img src>` could), and a cross-site POST is refused by its Origin or Fetch
 * Metadata. Tested through behaviour only: whatever else logout does (revocation, provider logout), a refused logout
 * must not do it, so the authorization server sees no request at all.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { browserSessionId, expectRefusal, loginUntilCallback, readSession, observe, type Observed } from '../helpers/security.js';

let stack: Stack;
let observed: Observed;

beforeAll(async () => {
  stack = await startStack();
  observed = observe(stack);
});
afterAll(async () => stack.close());

async function loggedIn(): Promise<Browser> {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  expect((await browser.request(pending.callbackUrl)).status).toBe(302);
  return browser;
}

async function expectStillLoggedIn(browser: Browser): Promise<void> {
  const home = await browser.request(`${stack.appUrl}/`);
  expect(home.body).toBe('hello alice');
  const session = await readSession(stack.redis, stack.sessionPrefix, browserSessionId(browser, stack.appUrl)!);
  expect(session?.oauth?.login?.claims?.sub).toBe('alice');
}

const logoutUrl = () => `${stack.appUrl}/logout`;

test('GET /logout never logs out (405, Allow: POST)', async () => {
  const browser = await loggedIn();

  const refused = await expectRefusal(observed, () => browser.request(logoutUrl()), { status: 405, code: 'method_not_allowed' });

  expect(refused.headers.get('allow')).toBe('POST');
  await expectStillLoggedIn(browser);
});

test('GET /logout with a same-origin Origin and Fetch Metadata still does not log out', async () => {
  const browser = await loggedIn();

  await expectRefusal(observed, () => browser.request(logoutUrl(), { headers: { origin: stack.appUrl, 'sec-fetch-site': 'same-origin' } }), {
    status: 405,
    code: 'method_not_allowed',
  });
  await expectStillLoggedIn(browser);
});

test.each(['HEAD', 'PUT', 'DELETE'])('%s /logout does not log out (405)', async (method) => {
  const browser = await loggedIn();

  const refused = await browser.request(logoutUrl(), { method, headers: { accept: 'application/json' } });

  expect(refused.status).toBe(405);
  await expectStillLoggedIn(browser);
});

test('a cross-site POST (foreign Origin) is refused with 403 and ends nothing', async () => {
  const browser = await loggedIn();

  await expectRefusal(observed, () => browser.request(logoutUrl(), { method: 'POST', headers: { origin: 'https://evil.example' } }), {
    status: 403,
    code: 'forbidden',
  });
  await expectStillLoggedIn(browser);
});

test('a cross-site POST flagged by Fetch Metadata (Sec-Fetch-Site: cross-site, no Origin) is refused', async () => {
  const browser = await loggedIn();

  await expectRefusal(observed, () => browser.request(logoutUrl(), { method: 'POST', headers: { 'sec-fetch-site': 'cross-site' } }), {
    status: 403,
    code: 'forbidden',
  });
  await expectStillLoggedIn(browser);
});

test('a POST with an opaque origin (Origin: null, sandboxed frame or data: page) is refused', async () => {
  const browser = await loggedIn();

  await expectRefusal(observed, () => browser.request(logoutUrl(), { method: 'POST', headers: { origin: 'null' } }), { status: 403, code: 'forbidden' });
  await expectStillLoggedIn(browser);
});

test('a POST from a sibling origin on the same site (other port) is refused', async () => {
  const browser = await loggedIn();
  const sibling = new URL(stack.appUrl);
  sibling.port = String(Number(sibling.port) + 1);

  await expectRefusal(
    observed,
    () => browser.request(logoutUrl(), { method: 'POST', headers: { origin: sibling.origin, 'sec-fetch-site': 'same-site' } }),
    { status: 403, code: 'forbidden' },
  );
  await expectStillLoggedIn(browser);
});

test('a same-origin POST logs out (control)', async () => {
  const browser = await loggedIn();
  const sid = browserSessionId(browser, stack.appUrl)!;

  const response = await browser.request(logoutUrl(), { method: 'POST', headers: { origin: stack.appUrl, 'sec-fetch-site': 'same-origin' } });

  expect(response.status).toBeLessThan(400);
  expect((await readSession(stack.redis, stack.sessionPrefix, sid))?.oauth?.login).toBeUndefined();
  expect((await browser.request(`${stack.appUrl}/`)).body).toBe('hello anonymous');
});

test('a POST the user started outside any page (Sec-Fetch-Site: none, which no page can cause) logs out, whatever its Origin says', async () => {
  const browser = await loggedIn();
  const sid = browserSessionId(browser, stack.appUrl)!;

  const response = await browser.request(logoutUrl(), { method: 'POST', headers: { origin: 'null', 'sec-fetch-site': 'none' } });

  expect(response.status).toBe(303);
  expect((await readSession(stack.redis, stack.sessionPrefix, sid))?.oauth?.login).toBeUndefined();
});

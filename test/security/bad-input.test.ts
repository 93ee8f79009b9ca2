/**
 * Bad input on the login and callback routes (RFC 6749 §3.1: parameters must not be repeated; RFC 9700 §4 on
 * robustness): oversized, repeated, badly encoded or non-string parameters are a 400 `invalid_request` — never a 500,
 * never a session, never a request to the authorization server. Error pages escape whatever the query says.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { expectRefusal, loginUntilCallback, observe, type Observed, type PendingLogin } from '../helpers/security.js';

let stack: Stack;
let observed: Observed;

beforeAll(async () => {
  stack = await startStack({
    // An app that parses queries the permissive way: the library reads the raw query string, never req.query.
    routes: (app) => app.set('query parser', 'extended'),
  });
  observed = observe(stack);
});
afterAll(async () => stack.close());

const BAD_QUERIES: Array<[string, string]> = [
  ['an oversized query string', `returnTo=/${'a'.repeat(5000)}`],
  ['an oversized parameter it does not know', `padding=${'a'.repeat(5000)}`],
  ['an invalid percent-escape', 'returnTo=%zz'],
  ['a truncated percent-escape', 'returnTo=/%E0%A4%A'],
  ['a lone % at the end', 'returnTo=/x%'],
  ['invalid UTF-8', 'returnTo=/%C3%28'],
  ['an encoded lone surrogate', 'returnTo=/%ED%A0%80'],
];

test.each([...BAD_QUERIES, ['a repeated returnTo', 'returnTo=/a&returnTo=/b'], ['returnTo as an array', 'returnTo[]=/a'], ['returnTo as an object', 'returnTo[x]=/a']])(
  'login with %s: 400 invalid_request, no session',
  async (_name, query) => {
    const browser = new Browser();

    const refused = await expectRefusal(observed, () => browser.request(`${stack.appUrl}/login?${query}`), { status: 400, code: 'invalid_request' });

    expect(refused.headers.getSetCookie()).toEqual([]);
  },
);

test('the length limit is the documented 4096 characters: a query that long is read, one more is refused', async () => {
  const query = (length: number) => `padding=${'a'.repeat(length - 'padding='.length)}`;
  const started = await new Browser().request(`${stack.appUrl}/login?${query(4096)}`);
  expect(started.status).toBe(302);

  await expectRefusal(observed, () => new Browser().request(`${stack.appUrl}/login?${query(4097)}`), { status: 400, code: 'invalid_request' });
});

test('parameters the library does not read may take any form: only its own are held to one plain value', async () => {
  const started = await new Browser().request(`${stack.appUrl}/login?returnTo=/a&utm[source]=x&tags[]=1&tags[]=2`);
  expect(started.status).toBe(302);
});

test.each(['returnTo=%zz', 'returnTo=/x%4', 'returnTo=/%E0%A4%A'])('a bad percent-escape (%s) is named as such, not as invalid UTF-8', async (query) => {
  const refused = await new Browser().request(`${stack.appUrl}/login?${query}`, { headers: { accept: 'application/json' } });

  expect(refused.status).toBe(400);
  expect(JSON.parse(refused.body)).toMatchObject({ error: 'invalid_request', error_description: 'The query string has an invalid percent-encoding.' });
});

let pending: PendingLogin;
let browser: Browser;

/** One pending login for all callback cases: the checks run before the transaction is looked up. */
beforeAll(async () => {
  browser = new Browser();
  pending = await loginUntilCallback(stack, browser);
});

function callbackWith(query: string): string {
  return `${stack.appUrl}/callback?${query}`;
}

const real = () => new URLSearchParams({ code: pending.code, state: pending.state, iss: stack.provider.issuer }).toString();

test.each([
  ...BAD_QUERIES.map(([name, query]): [string, () => string] => [name, () => `${real()}&${query}`]),
  ['a repeated state', () => `${real()}&state=${pending.state}`],
  ['a repeated code', () => `${real()}&code=other-code-value`],
  ['a repeated iss', () => `${real()}&iss=${encodeURIComponent(stack.provider.issuer)}`],
  ['a repeated error', () => `${real()}&error=a&error=b`],
  // The other parameters an authorization response may carry: one value each too, whichever one the library reads.
  ...['error_description', 'error_uri', 'session_state', 'response', 'id_token'].map((name): [string, () => string] => [
    `a repeated ${name}`,
    () => `${real()}&${name}=a&${name}=b`,
  ]),
  ['state as an array', () => `code=${pending.code}&state[]=${pending.state}&iss=${encodeURIComponent(stack.provider.issuer)}`],
  ['state as an object', () => `code=${pending.code}&state[a]=${pending.state}&iss=${encodeURIComponent(stack.provider.issuer)}`],
  ['code as an array', () => `code[]=${pending.code}&state=${pending.state}&iss=${encodeURIComponent(stack.provider.issuer)}`],
  ['iss as an array', () => `code=${pending.code}&state=${pending.state}&iss[]=${encodeURIComponent(stack.provider.issuer)}`],
])('callback with %s: 400 invalid_request, nothing redeemed', async (_name, query) => {
  await expectRefusal(observed, () => browser.request(callbackWith(query())), { status: 400, code: 'invalid_request', secrets: pending.secrets });
});

test('the pending login survives the bad requests above: malformed input is refused before the state is looked up', async () => {
  const landed = await browser.request(pending.callbackUrl);
  expect(landed.status).toBe(302);
});

test('the error page escapes what the authorization response says (no reflected markup)', async () => {
  const other = new Browser();
  const started = await loginUntilCallback(stack, other);
  const query = new URLSearchParams({
    state: started.state,
    iss: stack.provider.issuer,
    error: '<script>alert(1)</script>',
    error_description: `"><img src=x onerror=alert(2)> &lt;b&gt; 'quoted'`,
  });

  const refused = await expectRefusal(observed, () => other.request(callbackWith(query.toString())), {
    status: 400,
    code: 'authorization_error',
    secrets: started.secrets,
  });

  expect(refused.headers.get('content-type')).toMatch(/^text\/html/);
  expect(refused.body).not.toMatch(/<script|<img/i);
  expect(refused.body).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
  // Every character that HTML gives a meaning, an ampersand included: the page shows the text as sent, entities and all.
  expect(refused.body).toContain('&quot;&gt;&lt;img src=x onerror=alert(2)&gt; &amp;lt;b&amp;gt; &#39;quoted&#39;');
});

test('API clients get the same refusals as JSON with the stable code', async () => {
  const refused = await new Browser().request(`${stack.appUrl}/login?returnTo=/a&returnTo=/b`, { headers: { accept: 'application/json' } });

  expect(refused.status).toBe(400);
  expect(JSON.parse(refused.body)).toMatchObject({ error: 'invalid_request', status: 400 });
});

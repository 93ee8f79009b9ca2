import { inspect } from 'node:util';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { AuthError } from '../../lib/index.js';
import { resolveOptions } from '../../lib/options.js';
import { fetchResource as send, resourceRequest, type ResourceCredentials, type ResourceRequestInit } from '../../lib/resource.js';
import { createRuntime, type Runtime } from '../../lib/runtime.js';
import { listen, type Listener } from '../helpers/app.js';

/** What req.auth.fetch() does with the login's credentials: the request checked, then sent. */
async function fetchResource(runtime: Runtime, credentials: ResourceCredentials, url: string | URL, init?: ResourceRequestInit): Promise<Response> {
  return send(runtime, credentials, resourceRequest(url, init, { allowInsecureRequests: runtime.config.allowInsecureRequests, secrets: [credentials.accessToken] }), init);
}

/**
 * req.auth.fetch() is fetchResource() with the login's credentials; these cases need no login, only a resource server
 * (a real one, on loopback) and a runtime configured by hand (no discovery request).
 */
let api: Listener;
let closed: Listener;
let seen: Array<{ method: string; path: string; authorization: string | undefined; contentType: string | undefined; body: string }> = [];
const server = { authorizationEndpoint: 'http://127.0.0.1:9/authorize', tokenEndpoint: 'http://127.0.0.1:9/token' };
const timers: NodeJS.Timeout[] = [];
const bearer: ResourceCredentials = { accessToken: 'resource-test-token', tokenType: 'Bearer' };

function runtime(extra: Record<string, unknown> = {}): Runtime {
  return createRuntime(
    resolveOptions({ server, clientId: 'app', redirectUri: 'http://127.0.0.1/callback', scope: 'api', allowInsecureRequests: true, ...extra }),
  );
}

async function refusal(promise: Promise<unknown>): Promise<AuthError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthError);
  // What String(err), a stack trace and util.inspect print first.
  expect(String(err)).toMatch(/^AuthError: /);
  return err as AuthError;
}

beforeAll(async () => {
  [api, closed] = await Promise.all([listen(), listen()]);
  await closed.close();
  api.handle((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', api.url).pathname;
      // The request target as sent, query included: the token must not be added to the URL (RFC 6750 §2.3).
      seen.push({ method: req.method ?? '', path: req.url ?? '', authorization: req.headers.authorization, contentType: req.headers['content-type'], body });
      if (path === '/expired') {
        res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'application/json' }).end('{"error":"invalid_token"}');
      } else if (path === '/slow') {
        timers.push(setTimeout(() => res.writeHead(200).end('late'), 2500));
      } else if (path === '/download') {
        // Headers at once, the rest of the body well after httpTimeout (a large file, a slow upstream, a stream).
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first part;');
        timers.push(setTimeout(() => res.end('second part'), 1500));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      }
    });
  });
});

afterAll(async () => {
  for (const timer of timers) clearTimeout(timer);
  await api.close();
});

test('sends the token in the Authorization header only, with the method, headers and body given', async () => {
  seen = [];
  const response = await fetchResource(runtime(), bearer, `${api.url}/orders?page=2`, {
    method: 'post',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ item: 1 }),
  });

  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({ ok: true });
  expect(seen).toEqual([{ method: 'POST', path: '/orders?page=2', authorization: 'Bearer resource-test-token', contentType: 'application/json', body: '{"item":1}' }]);
});

test('a null body, as fetch takes it, is no body: a GET with one is sent', async () => {
  seen = [];
  const response = await fetchResource(runtime(), bearer, `${api.url}/orders`, { body: null });

  expect(response.status).toBe(200);
  expect(seen).toEqual([{ method: 'GET', path: '/orders', authorization: 'Bearer resource-test-token', contentType: undefined, body: '' }]);
});

test('a 401 challenge is returned to the caller, not thrown (the app decides: refresh or log in again)', async () => {
  const response = await fetchResource(runtime(), bearer, `${api.url}/expired`);

  expect(response.status).toBe(401);
  expect(await response.json()).toEqual({ error: 'invalid_token' });
});

/** A secret the caller put in a URL or header: no refusal may quote it, in its message or in its logged cause. */
const SECRET = 's3cr3t-api-key';

test.each([
  ['a relative URL', '/orders', {}, /absolute URL/],
  ['a relative URL with a secret in its query', `/orders?api_key=${SECRET}`, {}, /absolute URL/],
  ['an Authorization header of its own', 'API', { headers: { authorization: 'Bearer other' } }, /sets the Authorization and DPoP headers itself/],
  ['a DPoP header of its own', 'API', { headers: { DPoP: 'proof' } }, /sets the Authorization and DPoP headers itself/],
  // The Fetch API's own refusal would quote the URL, password included, and toJSON() sends the message to clients.
  ['a URL with credentials', `http://user:${SECRET}@127.0.0.1:9/orders`, {}, /URL with credentials/],
  ['a URL with a user name only', `http://${SECRET}@127.0.0.1:9/orders`, {}, /URL with credentials/],
  ['a URL with a password only', `http://:${SECRET}@127.0.0.1:9/orders`, {}, /URL with credentials/],
  ['a GET with a body', 'API', { body: 'x' }, /body for a GET request/],
  ['a HEAD with a body', 'API', { method: 'head', body: new URLSearchParams({ a: '1' }) }, /body for a HEAD request/],
  // The Fetch API's message quotes an invalid header value (here a header injection).
  ['an invalid header value', 'API', { headers: { 'x-api-key': `${SECRET}\r\nx-injected: 1` } }, /header with an invalid name or value/],
  ['an invalid header name', 'API', { headers: { 'x api key': SECRET } }, /header with an invalid name or value/],
  ['an invalid method', 'API', { method: 'GE T' }, /method, body or signal that fetch refuses/],
  ['a forbidden method', 'API', { method: 'TRACE' }, /method, body or signal that fetch refuses/],
  // Not possible in TypeScript without a cast, but plain JavaScript apps call it too: still an AuthError, not a TypeError.
  ['a method that is not a string', 'API', { method: 5 } as unknown as ResourceRequestInit, /method that is not a string/],
  ['options that are null', 'API', null as unknown as ResourceRequestInit, /options as an object/],
  ['options that are a string', 'API', 'POST' as unknown as ResourceRequestInit, /options as an object/],
  ['a signal that is no AbortSignal', 'API', { signal: { aborted: false } as unknown as AbortSignal }, /method, body or signal that fetch refuses/],
  ['a URL that is neither https: nor http:', `ftp://127.0.0.1:9/orders?api_key=${SECRET}`, {}, /over https: \(or http:\) only/],
])('refuses %s as misconfigured (a programming error, 500), sending nothing and quoting no secret', async (_case, url, init, message) => {
  seen = [];
  const err = await refusal(fetchResource(runtime(), bearer, url === 'API' ? `${api.url}/orders` : url, init));

  expect([err.code, err.status]).toEqual(['misconfigured', 500]);
  expect(err.message).toMatch(message);
  expect(JSON.stringify(err)).not.toContain(SECRET);
  expect(inspect(err, { depth: 10 })).not.toContain(SECRET);
  expect(seen).toEqual([]);
});

test('refuses an http: URL unless allowInsecureRequests is on, and never puts the token in the message', async () => {
  seen = [];
  const strict = createRuntime(
    resolveOptions({
      server: { authorizationEndpoint: 'https://idp.example.com/authorize', tokenEndpoint: 'https://idp.example.com/token' },
      clientId: 'app',
      redirectUri: 'https://app.example.com/callback',
      scope: 'api',
    }),
  );
  const err = await refusal(fetchResource(strict, bearer, `${api.url}/orders`));

  expect(err.code).toBe('misconfigured');
  expect(err.message).toMatch(/over https: only/);
  expect(JSON.stringify(err)).not.toContain(bearer.accessToken);
  expect(seen).toEqual([]);
});

test('a DPoP-bound token without its key is login_required', async () => {
  const err = await refusal(fetchResource(runtime(), { accessToken: 'x', tokenType: 'DPoP' }, `${api.url}/orders`));

  expect(err.code).toBe('login_required');
  expect(err.status).toBe(401);
});

test('httpTimeout bounds the wait for the headers only: a body slower than that is read to the end', async () => {
  const response = await fetchResource(runtime({ httpTimeout: 1000 }), bearer, `${api.url}/download`);

  expect(response.status).toBe(200);
  expect(await response.text()).toBe('first part;second part');
});

test("the app bounds the body with a signal of its own: its abort cuts the body read short, with the signal's reason", async () => {
  const controller = new AbortController();
  const response = await fetchResource(runtime({ httpTimeout: 1000 }), bearer, `${api.url}/download`, { signal: controller.signal });
  const enough = new Error('the app has waited long enough');
  const reading = response.text();
  setTimeout(() => controller.abort(enough), 200);

  await expect(reading).rejects.toBe(enough);
});

test("a request whose own signal is already aborted rejects with the signal's reason, sending nothing", async () => {
  seen = [];
  const reason = new Error('cancelled by the app');

  await expect(fetchResource(runtime(), bearer, `${api.url}/orders`, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  expect(seen).toEqual([]);
});

test('httpTimeout counts in milliseconds for req.auth.fetch(): 200 gives up well before a second', async () => {
  const started = performance.now();
  const slow = await refusal(fetchResource(runtime({ httpTimeout: 200 }), bearer, `${api.url}/slow`));

  expect([slow.code, slow.status]).toEqual(['resource_request_failed', 504]);
  expect(performance.now() - started).toBeLessThan(1000);
});

test('an unreachable resource server is resource_request_failed (502), a slow one 504 after httpTimeout', async () => {
  const down = await refusal(fetchResource(runtime(), bearer, `${closed.url}/orders`));
  expect([down.code, down.status]).toEqual(['resource_request_failed', 502]);
  expect(down.message).toBe('The resource server could not be reached.');

  const slow = await refusal(fetchResource(runtime({ httpTimeout: 1000 }), bearer, `${api.url}/slow`));
  expect([slow.code, slow.status]).toEqual(['resource_request_failed', 504]);
});

test('a failure that quotes the access token (one fetch cannot put in a header) keeps it out of the error and its cause', async () => {
  seen = [];
  const odd: ResourceCredentials = { accessToken: 'token-a-server-issued\nwith-a-line-break', tokenType: 'Bearer' };
  const err = await refusal(fetchResource(runtime(), odd, `${api.url}/orders`));

  expect([err.code, err.status]).toEqual(['resource_request_failed', 502]);
  for (const shown of [err.message, JSON.stringify(err), inspect(err, { depth: 10 })]) {
    expect(shown).not.toContain('token-a-server-issued');
    expect(shown).not.toContain('with-a-line-break');
  }
  expect(inspect(err, { depth: 10 })).toContain('[redacted]');
  expect(seen).toEqual([]);
});

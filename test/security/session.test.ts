/**
 * Sessions: a new session id at login (session fixation; RFC 9700 §4.7 relies on the session binding), the cookie
 * `HttpOnly`, `SameSite=Lax` and `Secure` whenever the app is served over HTTPS, directly or behind a proxy with
 * `trust proxy` — with the configuration the README recommends — and a process warning, once, when express-session
 * is configured insecurely.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpsRequest, createServer as createHttpsServer, type RequestOptions, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { Express } from 'express';
import { buildApp, startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { browserSessionId, loginUntilCallback, readSession } from '../helpers/security.js';
import { postLogout } from '../logout/support.js';

/** The README's recommendation. */
const RECOMMENDED_COOKIE = { secure: 'auto', sameSite: 'lax', httpOnly: true } as const;

let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ session: { cookie: RECOMMENDED_COOKIE }, routes: (app) => app.set('trust proxy', 'loopback') });
});
afterAll(async () => stack.close());

function cookieAttributes(setCookie: string[]): { httpOnly: boolean; sameSite: string | undefined; secure: boolean } {
  const header = setCookie.find((h) => h.startsWith('connect.sid='));
  if (header === undefined) throw new Error(`no session cookie in ${JSON.stringify(setCookie)}`);
  const attributes = header.split(';').slice(1).map((a) => a.trim().toLowerCase());
  return {
    httpOnly: attributes.includes('httponly'),
    sameSite: attributes.find((a) => a.startsWith('samesite='))?.slice('samesite='.length),
    secure: attributes.includes('secure'),
  };
}

test('login issues a new session id; the planted pre-login id is destroyed and never logged in (fixation)', async () => {
  const attacker = new Browser();
  await attacker.request(`${stack.appUrl}/login`);
  const planted = browserSessionId(attacker, stack.appUrl)!;
  const victim = new Browser();
  const host = new URL(stack.appUrl).hostname;
  victim.jar.set(host, new Map(attacker.jar.get(host)));

  const pending = await loginUntilCallback(stack, victim);
  expect(pending.sid).toBe(planted); // the victim really used the planted session
  expect((await victim.request(pending.callbackUrl)).status).toBe(302);

  const current = browserSessionId(victim, stack.appUrl)!;
  expect(current).not.toBe(planted);
  expect(await readSession(stack.redis, stack.sessionPrefix, planted)).toBeUndefined();
  expect((await readSession(stack.redis, stack.sessionPrefix, current))?.oauth?.login?.claims?.sub).toBe('alice');
  expect((await attacker.request(`${stack.appUrl}/`)).body).toBe('hello anonymous');
  expect((await attacker.request(`${stack.appUrl}/me`, { headers: { accept: 'application/json' } })).status).toBe(401);
});

test('over plain HTTP (development) the cookie is HttpOnly and SameSite=Lax, at login and after the id rotation', async () => {
  const browser = new Browser();
  const started = await browser.request(`${stack.appUrl}/login`);
  const pending = await loginUntilCallback(stack, browser, { start: started.headers.get('location')! });
  const landed = await browser.request(pending.callbackUrl);

  for (const response of [started, landed]) {
    expect(cookieAttributes(response.headers.getSetCookie())).toEqual({ httpOnly: true, sameSite: 'lax', secure: false });
  }
});

test('behind a TLS-terminating proxy with trust proxy, the cookie is Secure, at login and after the id rotation', async () => {
  const browser = new Browser();
  browser.headers = { ...browser.headers, 'x-forwarded-proto': 'https' };
  const started = await browser.request(`${stack.appUrl}/login`);
  const pending = await loginUntilCallback(stack, browser, { start: started.headers.get('location')! });
  const landed = await browser.request(pending.callbackUrl);

  for (const response of [started, landed]) {
    expect(cookieAttributes(response.headers.getSetCookie())).toEqual({ httpOnly: true, sameSite: 'lax', secure: true });
  }
});

test('behind a TLS-terminating proxy, POST /logout clears the cookie with the attributes it was set with, Secure included (browsers refuse a SameSite=None cookie without it)', async () => {
  const browser = new Browser();
  browser.headers = { ...browser.headers, 'x-forwarded-proto': 'https' };
  await browser.login(`${stack.appUrl}/login?returnTo=/me`);

  const response = await postLogout(browser, stack.appUrl);

  expect(response.status).toBe(303);
  const cleared = response.headers.getSetCookie().filter((cookie) => cookie.startsWith('connect.sid=;'));
  expect(cleared).toHaveLength(1);
  expect(cookieAttributes(cleared)).toEqual({ httpOnly: true, sameSite: 'lax', secure: true });
});

/** TLS without a certificate (pre-shared key, TLS 1.2): real HTTPS for express-session, no openssl needed. */
const PSK = Buffer.from('express-oauth-pkce-test-psk-0123');
const TLS = { ciphers: 'PSK-AES128-GCM-SHA256', maxVersion: 'TLSv1.2' } as const;

async function listenHttps(app: Express): Promise<{ server: Server; url: string }> {
  const server = createHttpsServer({ ...TLS, pskCallback: (_socket, identity) => (identity === 'test' ? PSK : null) }, app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function getOverTls(url: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const options: RequestOptions & ConnectionOptions = { ...TLS, pskCallback: () => ({ psk: PSK, identity: 'test' }), checkServerIdentity: () => undefined };
    const req = httpsRequest(url, options, (res) => {
      res.resume();
      res.on('end', () => resolve(res.headers['set-cookie'] ?? []));
    });
    req.on('error', reject);
    req.end();
  });
}

test('served over HTTPS directly, the cookie is Secure', async () => {
  const app = buildApp({ redis: stack.redis, sessionPrefix: stack.sessionPrefix, auth: stack.authOptions, session: { cookie: RECOMMENDED_COOKIE } });
  const { server, url } = await listenHttps(app);
  try {
    const setCookie = await getOverTls(`${url}/login`);
    expect(cookieAttributes(setCookie)).toEqual({ httpOnly: true, sameSite: 'lax', secure: true });
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Warnings go through process.emitWarning, once per process: each scenario runs in a fresh child process.

interface ChildReport {
  warnings: Array<{ name: string; code: string; message: string }>;
  setCookies: string[];
}

const FIXTURE = fileURLToPath(new URL('./fixtures/session-warnings.ts', import.meta.url));

function runScenario(scenario: string, nodeEnv: string): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, scenario], {
      env: { ...process.env, ISSUER: stack.provider.issuer, NODE_ENV: nodeEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0) resolve(JSON.parse(stdout) as ChildReport);
      else reject(new Error(`scenario ${scenario} exited with ${code}: ${stderr}`));
    });
  });
}

const children: ChildProcess[] = [];
const reports = new Map<string, Promise<ChildReport>>();
const report = (scenario: string) => reports.get(scenario)!;
const INSECURE_REQUESTS = 'EXPRESS_OAUTH_PKCE_INSECURE_REQUESTS';
// The session warnings only: the test's authorization server is plain http, so every child sets allowInsecureRequests,
// which production warns about (see its own test below).
const codes = async (scenario: string) =>
  (await report(scenario)).warnings
    .map((w) => w.code)
    .filter((code) => code !== INSECURE_REQUESTS)
    .sort();

beforeAll(() => {
  // Started together (they only wait on their own requests); each test awaits its own.
  for (const [scenario, env] of [
    ['recommended', 'production'],
    ['proxy-without-trust', 'production'],
    ['script-readable-cross-site', 'development'],
    ['strict', 'development'],
    ['none-capitalised', 'development'],
    ['strict-capitalised', 'development'],
    ['insecure', 'production'],
    ['httponly-unset', 'development'],
    ['strict-as-true-then-none', 'development'],
    ['development-defaults', 'development'],
    ['app-env-production', 'development'],
    ['app-env-development', 'production'],
    ['app-uses-session', 'production'],
    ['returning-browser', 'development'],
    ['insecure-by-hand', 'production'],
    ['insecure-all-https', 'production'],
  ] as const) {
    const running = runScenario(scenario, env);
    running.catch(() => undefined); // reported by the test that awaits it
    reports.set(scenario, running);
  }
});
afterAll(() => {
  for (const child of children) if (child.exitCode === null) child.kill();
});

test('the recommended setup in production behind a proxy with trust proxy warns about nothing', async () => {
  expect(await codes('recommended')).toEqual([]);
  expect(cookieAttributes((await report('recommended')).setCookies)).toEqual({ httpOnly: true, sameSite: 'lax', secure: true });
});

test('production with saveUninitialized: true, no Secure, the MemoryStore and no SameSite: one warning each, once per process', async () => {
  // The child ran two auth() instances with this setup, four requests each: still one warning per problem.
  expect(await codes('insecure')).toEqual([
    'EXPRESS_OAUTH_PKCE_COOKIE_NOT_SECURE',
    'EXPRESS_OAUTH_PKCE_COOKIE_SAMESITE',
    'EXPRESS_OAUTH_PKCE_MEMORY_STORE',
    'EXPRESS_OAUTH_PKCE_SAVE_UNINITIALIZED',
  ]);
  // Named as the library's TypeErrors and log lines are: a search of the logs for 'express-oauth-pkce' finds all three.
  for (const warning of (await report('insecure')).warnings) expect(warning.message).toMatch(/^express-oauth-pkce: /);
  const messages = (await report('insecure')).warnings.map((w) => w.message).join('\n');
  // Actionable, and without a session id, cookie value or secret.
  expect(messages).toContain("secure: 'auto'");
  expect(messages).toContain('saveUninitialized: false');
  expect(messages).toContain('connect-redis');
  expect(messages).not.toMatch(/s%3A|s:[\w-]{20,}|child-session-secret/);
});

test('allowInsecureRequests: true in production warns at startup, once per process, naming the http: URLs; not in development', async () => {
  const insecure = (await report('insecure')).warnings.filter((w) => w.code === INSECURE_REQUESTS);
  // Two auth() instances in that child: still one warning.
  expect(insecure).toHaveLength(1);
  expect(insecure[0]!.message).toMatch(/`allowInsecureRequests: true` with NODE_ENV=production.*plain http.*\(http: here: http:\/\/localhost:\d+\/, http:\/\/127\.0\.0\.1:\d+\/callback\).*remove `allowInsecureRequests`/);
  expect((await report('recommended')).warnings.map((w) => w.code)).toContain(INSECURE_REQUESTS);
  // A server by hand has no issuer to name: its endpoints are what travel over http. Its https: endpoint is no news.
  const byHand = (await report('insecure-by-hand')).warnings.filter((w) => w.code === INSECURE_REQUESTS);
  expect(byHand).toHaveLength(1);
  expect(byHand[0]!.message).toMatch(/\(http: here: http:\/\/localhost:\d+\/auth, http:\/\/localhost:\d+\/token, http:\/\/127\.0\.0\.1:\d+\/callback\)/);
  expect(byHand[0]!.message).not.toContain('https://idp.example.com/revoke');
  // Every configured URL https: still warned, since the endpoints discovered later may be http:, and said so.
  const allHttps = (await report('insecure-all-https')).warnings.filter((w) => w.code === INSECURE_REQUESTS);
  expect(allHttps).toHaveLength(1);
  expect(allHttps[0]!.message).toMatch(/with NODE_ENV=production.*\(every configured URL is https: now, but endpoints the metadata names may not be\)/);
  expect(allHttps[0]!.message).not.toContain('http: here');
  expect((await report('strict')).warnings.map((w) => w.code)).not.toContain(INSECURE_REQUESTS);
  expect((await report('script-readable-cross-site')).warnings.map((w) => w.code)).not.toContain(INSECURE_REQUESTS);
});

test('behind a proxy without trust proxy in production, the cookie is not Secure: warned', async () => {
  expect(await codes('proxy-without-trust')).toEqual(['EXPRESS_OAUTH_PKCE_COOKIE_NOT_SECURE']);
  expect(cookieAttributes((await report('proxy-without-trust')).setCookies).secure).toBe(false);
});

test('httpOnly: false and SameSite=None warn, even in development', async () => {
  expect(await codes('script-readable-cross-site')).toEqual(['EXPRESS_OAUTH_PKCE_COOKIE_NOT_HTTPONLY', 'EXPRESS_OAUTH_PKCE_COOKIE_SAMESITE']);
});

test('SameSite=Strict warns: the cookie would not come back with the redirect from the authorization server', async () => {
  expect(await codes('strict')).toEqual(['EXPRESS_OAUTH_PKCE_COOKIE_SAMESITE']);
});

test.each([
  ['None', 'none-capitalised', 'none', /SameSite=None/],
  ['Strict', 'strict-capitalised', 'strict', /SameSite=Strict/],
])('sameSite: %s, capitalised, warns as the lowercase value does (the cookie carries it all the same)', async (_value, scenario, sent, message) => {
  expect(cookieAttributes((await report(scenario)).setCookies).sameSite).toBe(sent);
  expect(await codes(scenario)).toEqual(['EXPRESS_OAUTH_PKCE_COOKIE_SAMESITE']);
  expect((await report(scenario)).warnings.map((w) => w.message).join('\n')).toMatch(message);
});

test('httpOnly left undefined sends the cookie without HttpOnly: warned as httpOnly: false is', async () => {
  expect(cookieAttributes((await report('httponly-unset')).setCookies).httpOnly).toBe(false);
  expect(await codes('httponly-unset')).toEqual(['EXPRESS_OAUTH_PKCE_COOKIE_NOT_HTTPONLY']);
});

test("sameSite: true is express-session's Strict and warns as such; another app's SameSite=None in the same process still warns", async () => {
  expect(cookieAttributes((await report('strict-as-true-then-none')).setCookies).sameSite).toBe('strict');
  const warnings = (await report('strict-as-true-then-none')).warnings.filter((w) => w.code === 'EXPRESS_OAUTH_PKCE_COOKIE_SAMESITE');
  // One warning per kind of problem, not one per code: the second app's None is not hidden by the first app's Strict.
  expect(warnings.map((w) => w.message)).toEqual([expect.stringMatching(/SameSite=Strict/), expect.stringMatching(/SameSite=None/)]);
});

test('in development the MemoryStore, no Secure and no SameSite warn about nothing', async () => {
  expect(await codes('development-defaults')).toEqual([]);
});

// Express reads NODE_ENV into the env setting, and an app may set its own: that is what the README calls production.
test("an app whose env setting is development is not production under NODE_ENV=production: the MemoryStore, no Secure and no SameSite warn about nothing", async () => {
  expect(cookieAttributes((await report('app-env-development')).setCookies)).toEqual({ httpOnly: true, sameSite: undefined, secure: false });
  expect(await codes('app-env-development')).toEqual([]);
});

test("production is what the app's env setting says, not only NODE_ENV; sameSite: false is no SameSite attribute", async () => {
  expect(cookieAttributes((await report('app-env-production')).setCookies).sameSite).toBeUndefined();
  expect(await codes('app-env-production')).toEqual(['EXPRESS_OAUTH_PKCE_COOKIE_SAMESITE']);
  expect((await report('app-env-production')).warnings.map((w) => w.message).join('\n')).toMatch(/no SameSite attribute/);
});

test("with saveUninitialized: false, new sessions the app writes to or destroys, and the app's own cookies, are not taken for saveUninitialized: true", async () => {
  // The app's write gave the new visitor a session cookie; the other cookie is the app's own.
  const { setCookies } = await report('app-uses-session');
  expect(setCookies.some((c) => c.startsWith('connect.sid='))).toBe(true);
  expect(setCookies.some((c) => c.startsWith('theme='))).toBe(true);
  expect(await codes('app-uses-session')).toEqual([]);
});

test("saveUninitialized: true is still seen after a returning browser's request that left its session untouched-looking", async () => {
  // That request carried its cookie and emptied its session: it says nothing about new sessions, the next one does.
  expect(await codes('returning-browser')).toEqual(['EXPRESS_OAUTH_PKCE_SAVE_UNINITIALIZED']);
});

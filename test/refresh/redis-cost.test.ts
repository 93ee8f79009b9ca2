import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { refreshRoutes } from './fixtures/routes.js';
import { getJson, readLogin, sessionId } from './support.js';

// Counted from Redis itself (MONITOR), so whatever client or library sends a command, it shows. Only commands on this
// stack's keys count: other test files share the Redis server. The monitor speaks RESP over a plain socket: ioredis's
// monitor mode can mistake a monitor line for a reply when the server is busy.
let stack: Stack;
let monitor: Socket;
const seen: string[][] = [];

/** The quoted arguments of a MONITOR line: `+<time> [<db> <client>] "cmd" "arg" …` (Redis escapes quotes and newlines). */
function monitorArgs(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1] ?? '');
}

async function openMonitor(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  let buffer = '';
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      for (let end = buffer.indexOf('\r\n'); end !== -1; end = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line === '+OK') resolve();
        else if (line.startsWith('+')) seen.push(monitorArgs(line));
      }
    });
    socket.write('MONITOR\r\n');
  });
  return socket;
}

beforeAll(async () => {
  stack = await startStack({ routes: (app) => refreshRoutes(app) });
  monitor = await openMonitor(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
});
afterAll(async () => {
  monitor?.destroy();
  await stack?.close();
});

const ours = (args: string[]) => args.some((a) => a.startsWith(stack.sessionPrefix) || a.startsWith(String(stack.authOptions.keyPrefix)));

/** The commands on this stack's keys while `action` runs, up to a marker that MONITOR must have seen. */
async function commandsDuring(action: () => Promise<unknown>): Promise<string[]> {
  // MONITOR's stream lags behind: markers on both sides, so that earlier commands (the test's own reads) arriving late
  // are not counted, and the window closes only once everything in it has arrived.
  const startIndex = await markerSeen(0);
  await action();
  const endIndex = await markerSeen(startIndex + 1);
  return seen
    .slice(startIndex + 1, endIndex)
    .filter(ours)
    .map((args) => args.map((a) => (a.startsWith(stack.sessionPrefix) ? '<session>' : a)).join(' '));
}

/** Sends a marker command and returns its index in the MONITOR stream (searching from `from`). */
async function markerSeen(from: number): Promise<number> {
  const marker = `${String(stack.authOptions.keyPrefix)}marker:${Math.random()}`;
  await stack.redis.get(marker);
  for (let i = 0; i < 200; i++) {
    const index = seen.findIndex((args, at) => at >= from && args.includes(marker));
    if (index !== -1) return index;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('MONITOR never showed the marker');
}

async function loggedIn(): Promise<Browser> {
  const browser = new Browser();
  expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200);
  return browser;
}

/** `GET /api/token` (the route calls `getAccessToken()`): the token it answered and the commands it cost. */
async function tokenRequest(browser: Browser): Promise<{ token: unknown; commands: string[] }> {
  let token: unknown;
  const commands = await commandsDuring(async () => {
    const result = await getJson(browser, `${stack.appUrl}/api/token`);
    expect(result.status).toBe(200);
    token = result.body.accessToken;
  });
  return { token, commands };
}

test('getAccessToken() with a valid session copy costs no Redis command beyond express-session + connect-redis', async () => {
  const browser = await loggedIn();
  const login = await readLogin(stack, browser);

  // A normal authenticated request that never asks for a token: the floor.
  const plain = await commandsDuring(async () => expect((await getJson(browser, `${stack.appUrl}/api/plain`)).status).toBe(200));
  // The same request asking for the access token.
  const { token, commands: withToken } = await tokenRequest(browser);

  expect(token).toBe(login.tokens.accessToken);
  expect(plain.map((c) => c.split(' ')[0]?.toLowerCase())).toEqual(['get', 'expire']);
  expect(withToken.map((c) => c.split(' ')[0]?.toLowerCase())).toEqual(['get', 'expire']);
  expect(withToken.filter((c) => c.includes(String(stack.authOptions.keyPrefix)))).toEqual([]);
});

test('a request that writes the session of a login reads its token-store entry once after the write; an anonymous one does not', async () => {
  const browser = await loggedIn();
  const login = await readLogin(stack, browser);

  // /api/slow-write adds the app's own data to the session, so express-session writes it (SET) as the response ends.
  const written = await commandsDuring(async () => expect((await getJson(browser, `${stack.appUrl}/api/slow-write`)).status).toBe(200));
  const anonymous = await commandsDuring(async () => expect((await getJson(new Browser(), `${stack.appUrl}/api/slow-write`)).status).toBe(200));

  // The read looks for a logout's tombstone: the session may have been destroyed while the request was at work.
  expect(written.map((c) => c.split(' ')[0]?.toLowerCase())).toEqual(['get', 'set', 'get']);
  expect(written[2]).toBe(`get ${String(stack.authOptions.keyPrefix)}tokens:${login.id}`);
  expect(anonymous.map((c) => c.split(' ')[0]?.toLowerCase())).toEqual(['set']);
});

test('a login writes the token store once, with the key prefix and a TTL', async () => {
  const browser = new Browser();
  const loginCommands = await commandsDuring(async () => expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200));
  const login = await readLogin(stack, browser);

  const tokenWrites = loginCommands.filter((c) => c.includes(`${String(stack.authOptions.keyPrefix)}tokens:`));
  expect(tokenWrites).toHaveLength(1);
  expect(tokenWrites[0]).toMatch(new RegExp(`^set \\S*tokens:${login.id} .* EX \\d+$`, 'i'));
  // Every key the library wrote carries the prefix and expires.
  const keys = await stack.redis.keys(`${String(stack.authOptions.keyPrefix)}*`);
  expect(keys.length).toBeGreaterThan(0);
  for (const key of keys) expect(await stack.redis.ttl(key)).toBeGreaterThan(0);
});

test('logout replaces the login tokens in the store by a tombstone that expires with the session', async () => {
  const browser = await loggedIn();
  const login = await readLogin(stack, browser);
  const key = `${String(stack.authOptions.keyPrefix)}tokens:${login.id}`;
  expect(await stack.redis.exists(key)).toBe(1);

  const response = await browser.request(`${stack.appUrl}/logout`, { method: 'POST', headers: { origin: stack.appUrl } });

  expect(response.status).toBe(303);
  // No tokens left, and a version no refresh can beat (a deletion would let a refresh in flight write its tokens back).
  expect(JSON.parse((await stack.redis.get(key))!)).toEqual({ v: Number.MAX_SAFE_INTEGER, ended: true });
  const ttl = await stack.redis.ttl(key);
  expect(ttl).toBeGreaterThan(0);
  expect(ttl).toBeLessThanOrEqual(86_400);
});

/** Rewrites the login's token copy in the stored session (as an earlier version, or damage, would have left it). */
async function replaceSessionCopy(browser: Browser, copy: unknown): Promise<void> {
  const key = `${stack.sessionPrefix}${sessionId(browser, stack.appUrl)}`;
  const session = JSON.parse((await stack.redis.get(key))!) as { oauth: { login: { tokens: unknown } } };
  session.oauth.login.tokens = copy;
  await stack.redis.set(key, JSON.stringify(session), 'KEEPTTL');
}

test('a session written before the packed copy (tokens as an object) keeps its login, still without Redis commands', async () => {
  const browser = await loggedIn();
  const login = await readLogin(stack, browser);
  await replaceSessionCopy(browser, { ...login.tokens });

  const { token, commands } = await tokenRequest(browser);

  expect(token).toBe(login.tokens.accessToken);
  expect(commands.map((c) => c.split(' ')[0]?.toLowerCase())).toEqual(['get', 'expire']);
});

test('a token copy that does not unpack is answered from the token store and written back packed', async () => {
  const browser = await loggedIn();
  const login = await readLogin(stack, browser);
  await replaceSessionCopy(browser, 't1|1|2|6:Bearer99:cut short');

  const { token, commands } = await tokenRequest(browser);

  expect(token).toBe(login.tokens.accessToken);
  expect(commands).toContain(`get ${String(stack.authOptions.keyPrefix)}tokens:${login.id}`);
  // Repaired: readLogin() throws unless the session holds a packed copy that unpacks, so the next call costs no
  // token-store command.
  expect((await readLogin(stack, browser)).tokens).toEqual(login.tokens);
});

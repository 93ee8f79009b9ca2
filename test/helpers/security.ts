/**
 * Shared checks of the security suite: what every refusal must (not) do, observed on the real parts — the Redis
 * session store, the authorization server's request log, and the process's console and warning output.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import { inspect } from 'node:util';
import { expect } from '@jest/globals';
import type { Redis } from 'ioredis';
import { unpackTokens } from '../../lib/tokens.js';
import { CLIENT_SECRET, SESSION_SECRET } from './app.js';
import type { Browser, BrowserResponse } from './browser.js';

// ---------------------------------------------------------------------------------------------------------------
// Traffic at the authorization server

export interface RecordedRequest {
  method: string;
  path: string;
  search: string;
  headers: IncomingMessage['headers'];
  /** The raw request body, when the server records it (the rogue provider does; oidc-provider's is left alone). */
  body?: string;
}

export interface Traffic {
  readonly requests: RecordedRequest[];
  /** How many requests matched, e.g. `count('POST', '/token')`. */
  count(method: string, path: string): number;
  /** `METHOD /path` of every request since `since` (an index into `requests`), sorted. */
  since(since: number): string[];
}

export function trafficLog(requests: RecordedRequest[] = []): Traffic {
  return {
    requests,
    count: (method, path) => requests.filter((r) => r.method === method && r.path === path).length,
    since: (index) => requests.slice(index).map((r) => `${r.method} ${r.path}`).sort(),
  };
}

/**
 * Records method, path and headers of every request a server receives. A second `request` listener: it never
 * touches the body, so the server's own handler is unaffected.
 */
export function recordTraffic(server: Server): Traffic {
  const log = trafficLog();
  server.on('request', (req: IncomingMessage) => {
    const url = new URL(req.url ?? '/', 'http://recorded.invalid');
    log.requests.push({ method: req.method ?? 'GET', path: url.pathname, search: url.search, headers: req.headers });
  });
  return log;
}

// ---------------------------------------------------------------------------------------------------------------
// Console, stdout/stderr and process warnings

export interface OutputCapture {
  /** Everything written so far, joined. */
  text(): string;
  /** Process warnings emitted while capturing. */
  readonly warnings: Error[];
  restore(): void;
}

const CONSOLE_METHODS = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const;

/** Captures console output (suppressed), stdout/stderr writes (passed through) and process warnings. */
export function captureOutput(): OutputCapture {
  const chunks: string[] = [];
  const warnings: Error[] = [];
  const saved = CONSOLE_METHODS.map((name) => [name, console[name]] as const);
  for (const name of CONSOLE_METHODS) {
    console[name] = (...args: unknown[]) => {
      chunks.push(args.map((a) => (typeof a === 'string' ? a : inspectDeep(a))).join(' '));
    };
  }
  const streams = [process.stdout, process.stderr] as const;
  const writes = streams.map((s) => s.write);
  for (const [i, stream] of streams.entries()) {
    const original = writes[i]!;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      chunks.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8'));
      return (original as (...a: unknown[]) => boolean).call(stream, chunk, ...rest);
    }) as typeof stream.write;
  }
  const onWarning = (warning: Error) => {
    warnings.push(warning);
    chunks.push(`${warning.name}: ${warning.message}`);
  };
  process.on('warning', onWarning);
  return {
    text: () => chunks.join('\n'),
    warnings,
    restore() {
      for (const [name, fn] of saved) console[name] = fn;
      for (const [i, stream] of streams.entries()) stream.write = writes[i]!;
      process.off('warning', onWarning);
    },
  };
}

/** `util.inspect` with every level of nesting, hidden properties included: what a careless `console.log(err)` could print. */
export function inspectDeep(value: unknown): string {
  return inspect(value, { depth: Infinity, showHidden: true, getters: true });
}

// ---------------------------------------------------------------------------------------------------------------
// Sessions in Redis

export interface SessionRecord {
  cookie?: unknown;
  oauth?: {
    tx?: Record<string, { verifier: string; nonce?: string; returnTo: string; createdAt: number }>;
    /** `tokens` is the packed session copy: read it with `unpackTokens()`. */
    login?: { id: string; claims?: Record<string, unknown>; tokens: unknown };
  };
  [key: string]: unknown;
}

/** The session id inside an express-session cookie value (`s:<id>.<signature>`, URL-encoded). */
export function sessionIdOf(cookieValue: string): string {
  const decoded = decodeURIComponent(cookieValue);
  if (!decoded.startsWith('s:')) throw new Error(`not a signed session cookie: ${decoded}`);
  return decoded.slice(2, decoded.lastIndexOf('.'));
}

/** The session cookie's id for `appUrl` in `browser`, if it has one. */
export function browserSessionId(browser: Browser, appUrl: string, name = 'connect.sid'): string | undefined {
  const value = browser.cookie(new URL(appUrl).hostname, name)?.value;
  return value === undefined ? undefined : sessionIdOf(value);
}

/** Every session stored under `prefix`, by session id. */
export async function storedSessions(redis: Redis, prefix: string): Promise<Map<string, SessionRecord>> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const sessions = new Map<string, SessionRecord>();
  for (const key of keys) {
    const raw = await redis.get(key);
    if (raw !== null) sessions.set(key.slice(prefix.length), JSON.parse(raw) as SessionRecord);
  }
  return sessions;
}

export async function readSession(redis: Redis, prefix: string, sid: string): Promise<SessionRecord | undefined> {
  const raw = await redis.get(`${prefix}${sid}`);
  return raw === null ? undefined : (JSON.parse(raw) as SessionRecord);
}

/** Rewrites a stored session in place (keeping its TTL), e.g. to age a transaction. */
export async function editSession(redis: Redis, prefix: string, sid: string, edit: (session: SessionRecord) => void): Promise<void> {
  const session = await readSession(redis, prefix, sid);
  if (session === undefined) throw new Error(`no session ${sid}`);
  edit(session);
  await redis.set(`${prefix}${sid}`, JSON.stringify(session), 'KEEPTTL');
}

/**
 * Stores a copy of the live transaction of `state` (its real verifier and nonce) under `key` too, in session `sid`:
 * a lookup by `key` would then find a transaction that completes the login. As an own property even for keys such as
 * `__proto__`, which plain assignment would turn into a prototype change.
 */
export async function plantTransaction(redis: Redis, prefix: string, sid: string, state: string, key: string): Promise<void> {
  await editSession(redis, prefix, sid, (session) => {
    const tx = session.oauth?.tx;
    const live = tx?.[state];
    if (tx === undefined || live === undefined) throw new Error(`session ${sid} holds no transaction for ${state}`);
    Object.defineProperty(tx, key, { value: { ...live, createdAt: Date.now() }, enumerable: true, configurable: true, writable: true });
  });
  const planted = (await readSession(redis, prefix, sid))?.oauth?.tx;
  if (planted === undefined || !Object.hasOwn(planted, key)) throw new Error(`the transaction under ${JSON.stringify(key)} was not stored`);
}

// ---------------------------------------------------------------------------------------------------------------
// Responses

/** The stable error code of an error response: the JSON `error`, or the code printed on the HTML error page. */
export function errorCodeOf(response: Pick<BrowserResponse, 'body' | 'headers'>): string | undefined {
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('application/json')) {
    const parsed = JSON.parse(response.body) as { error?: unknown };
    return typeof parsed.error === 'string' ? parsed.error : undefined;
  }
  return /Error code: <code>([a-z_]+)<\/code>/.exec(response.body)?.[1];
}

// ---------------------------------------------------------------------------------------------------------------
// The refusal contract

/** What a refusal is checked against: the app's Redis sessions and the authorization server's request log. */
export interface Observed {
  redis: Redis;
  sessionPrefix: string;
  traffic: Traffic;
  /**
   * The app's `keyPrefix`, to read its token store. Without it the entries are found by their login ids (random, so
   * unique in the shared Redis) with one SCAN.
   */
  keyPrefix?: string;
}

/** Watches a real-provider stack: its Redis and session prefix, and every request its provider receives. */
export function observe(stack: { redis: Redis; sessionPrefix: string; provider: { server: Server }; authOptions?: { keyPrefix?: string } }): Observed {
  return {
    redis: stack.redis,
    sessionPrefix: stack.sessionPrefix,
    traffic: recordTraffic(stack.provider.server),
    ...(stack.authOptions === undefined ? {} : { keyPrefix: stack.authOptions.keyPrefix ?? 'oauth-pkce:' }),
  };
}

/** A token-store entry in short: its version, whether it is ended, and a digest of all of it (no token in test output). */
function entrySummary(raw: string): string {
  const parsed = JSON.parse(raw) as { v?: unknown; ended?: unknown };
  return `v=${String(parsed.v)} ${parsed.ended === true ? 'ended' : 'live'} sha256:${createHash('sha256').update(raw).digest('hex').slice(0, 16)}`;
}

/** The token-store entry (summarised) of every login in `sessions`, by login id (null: none). */
async function tokenStoreEntries(observed: Observed, sessions: Map<string, SessionRecord>): Promise<Map<string, string | null>> {
  const ids = [...sessions.values()].map((s) => s.oauth?.login?.id).filter((id): id is string => typeof id === 'string');
  const entries = new Map<string, string | null>();
  if (ids.length === 0) return entries;
  let keys: Map<string, string>;
  if (observed.keyPrefix !== undefined) {
    keys = new Map(ids.map((id) => [id, `${observed.keyPrefix}tokens:${id}`]));
  } else {
    keys = new Map();
    const wanted = new Set(ids);
    let cursor = '0';
    do {
      const [next, batch] = await observed.redis.scan(cursor, 'MATCH', '*tokens:*', 'COUNT', 1000);
      cursor = next;
      for (const key of batch) {
        const id = key.slice(key.lastIndexOf('tokens:') + 'tokens:'.length);
        if (wanted.has(id)) keys.set(id, key);
      }
    } while (cursor !== '0');
  }
  for (const id of ids) {
    const key = keys.get(id);
    const raw = key === undefined ? null : await observed.redis.get(key);
    entries.set(id, raw === null ? null : entrySummary(raw));
  }
  return entries;
}

export interface RefusalExpectation {
  status: number;
  code: string;
  /**
   * `METHOD /path` of the requests the authorization server may receive while the refused request is handled
   * (sorted), e.g. `['POST /token']` when the refusal comes after the code exchange. Default: none at all.
   */
  calls?: string[];
  /**
   * Values that must not appear in the response, in console/stdout/stderr output or in process warnings. A function
   * is called after the request, for values made while it ran (tokens a server issued).
   */
  secrets?: Array<string | undefined> | (() => Array<string | undefined>);
}

/** Values no output may ever contain, whatever the test. */
export const ALWAYS_SECRET = [CLIENT_SECRET, SESSION_SECRET];

/**
 * Runs `action` (one request that must be refused) and checks the whole contract: the status and stable code, no new
 * session and no new or changed login in Redis, no authorization-server call beyond `calls`, and no secret in the
 * response or in anything printed meanwhile. Returns the response for further checks.
 */
export async function expectRefusal(
  observed: Observed,
  action: () => Promise<BrowserResponse>,
  expectation: RefusalExpectation,
): Promise<BrowserResponse> {
  const before = await storedSessions(observed.redis, observed.sessionPrefix);
  const storeBefore = await tokenStoreEntries(observed, before);
  const mark = observed.traffic.requests.length;
  const output = captureOutput();
  let response: BrowserResponse;
  try {
    response = await action();
    // Warnings are emitted on the next tick; let them arrive while still capturing.
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    output.restore();
  }

  expect({ status: response.status, code: errorCodeOf(response) }).toEqual({ status: expectation.status, code: expectation.code });
  expect(response.headers.get('location')).toBeNull();

  const after = await storedSessions(observed.redis, observed.sessionPrefix);
  for (const [sid, session] of after) {
    // No session was created, and no existing one gained or changed a login: not its id, nor its token copy, version,
    // claims or anything else the login holds.
    expect(before.has(sid) ? sid : `new session ${sid}`).toBe(sid);
    expect(session.oauth?.login).toEqual(before.get(sid)?.oauth?.login);
  }
  for (const [sid, session] of before) {
    // Nor was a login ended: a refused request changes nothing for the user either.
    if (session.oauth?.login !== undefined) expect(after.get(sid)?.oauth?.login ?? `login of ${sid} ended`).toEqual(session.oauth.login);
  }
  // The token store holds the same entry for each of those logins (same version and tokens, not ended).
  expect(await tokenStoreEntries(observed, before)).toEqual(storeBefore);

  // Calls the library makes without waiting (revoking tokens a refused login was issued) may still be on their way.
  const expectedCalls = [...(expectation.calls ?? [])].sort();
  for (let waited = 0; observed.traffic.since(mark).length < expectedCalls.length && waited < 5000; waited += 20) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  expect(observed.traffic.since(mark)).toEqual(expectedCalls);

  const listed = typeof expectation.secrets === 'function' ? expectation.secrets() : (expectation.secrets ?? []);
  const secrets = [...ALWAYS_SECRET, ...listed].filter((s): s is string => typeof s === 'string' && s.length >= 8);
  const printed = output.text();
  const headers = JSON.stringify([...response.headers]);
  for (const secret of secrets) {
    expect(printed.includes(secret) ? `printed: ${secret}` : 'not printed').toBe('not printed');
    expect(response.body.includes(secret) || headers.includes(secret) ? `in response: ${secret}` : 'not in response').toBe('not in response');
  }
  return response;
}

/** The secrets a stored session holds: the PKCE verifiers and nonces of its transactions, and its tokens. */
/**
 * The verifiers, nonces and tokens a stored session holds, plus the whole token set of its login in the token store
 * (the session copy leaves the raw ID token out).
 */
export async function secretsOfLogin(stack: { redis: Redis; authOptions: { keyPrefix?: string } }, session: SessionRecord | undefined): Promise<string[]> {
  const values = secretsOfSession(session);
  const loginId = (session?.oauth?.login as { id?: unknown } | undefined)?.id;
  if (typeof loginId !== 'string') return values;
  const raw = await stack.redis.get(`${stack.authOptions.keyPrefix ?? 'oauth-pkce:'}tokens:${loginId}`);
  const tokens = raw === null ? {} : ((JSON.parse(raw) as { tokens?: Record<string, unknown> }).tokens ?? {});
  for (const name of ['accessToken', 'refreshToken', 'idToken']) {
    const value = tokens[name];
    if (typeof value === 'string' && !values.includes(value)) values.push(value);
  }
  return values;
}

export function secretsOfSession(session: SessionRecord | undefined): string[] {
  if (session === undefined) return [];
  const values: string[] = [];
  for (const tx of Object.values(session.oauth?.tx ?? {})) {
    values.push(tx.verifier);
    if (tx.nonce !== undefined) values.push(tx.nonce);
  }
  const login = session.oauth?.login;
  if (login !== undefined) {
    const tokens = unpackTokens(login.tokens);
    // A copy this library cannot read would make every secrecy check pass without looking at any token.
    if (tokens === undefined) throw new Error('the session holds a login whose token copy does not unpack');
    for (const value of [tokens.accessToken, tokens.refreshToken, tokens.idToken]) if (value !== undefined) values.push(value);
  }
  return values;
}

// ---------------------------------------------------------------------------------------------------------------
// Driving a login up to its callback

export interface PendingLogin {
  /** The authorization response, as the authorization server sent the browser back: tamper with it, replay it. */
  callbackUrl: URL;
  state: string;
  code: string;
  /** The app session that holds the transaction. */
  sid: string;
  verifier: string;
  /** Values that must never be printed or shown: the code, the verifier, the nonce. */
  secrets: string[];
}

/** Runs a login in `browser` until the authorization server redirects back, without requesting the callback. */
export async function loginUntilCallback(
  app: { appUrl: string; redis: Redis; sessionPrefix: string },
  browser: Browser,
  options: { returnTo?: string; login?: string; start?: string } = {},
): Promise<PendingLogin> {
  const callbackPath = '/callback';
  const start = options.start ?? `${app.appUrl}/login${options.returnTo === undefined ? '' : `?returnTo=${encodeURIComponent(options.returnTo)}`}`;
  const result = await browser.login(start, {
    login: options.login ?? 'alice',
    stopAtCallback: (url) => url.origin === app.appUrl && url.pathname === callbackPath,
  });
  const location = result.steps.at(-1)?.location;
  if (location === undefined) throw new Error(`the login did not come back to the app: ${result.status} ${result.url}`);
  const callbackUrl = new URL(location);
  if (callbackUrl.pathname !== callbackPath) throw new Error(`the login did not end on the callback: ${location}`);
  const state = callbackUrl.searchParams.get('state') ?? '';
  const code = callbackUrl.searchParams.get('code') ?? '';
  const sid = browserSessionId(browser, app.appUrl);
  if (sid === undefined) throw new Error('the browser has no session cookie after /login');
  const session = await readSession(app.redis, app.sessionPrefix, sid);
  const tx = session?.oauth?.tx?.[state];
  if (tx === undefined) throw new Error('the session holds no transaction for the returned state');
  return { callbackUrl, state, code, sid, verifier: tx.verifier, secrets: [code, tx.verifier, ...(tx.nonce ? [tx.nonce] : [])] };
}

/** A copy of `url` with its query parameters changed (`undefined` deletes one). */
export function withParams(url: URL, changes: Record<string, string | undefined>): URL {
  const copy = new URL(url);
  for (const [name, value] of Object.entries(changes)) {
    if (value === undefined) copy.searchParams.delete(name);
    else copy.searchParams.set(name, value);
  }
  return copy;
}

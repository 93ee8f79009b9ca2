import type { Request } from 'express';
import type { ResolvedConfig } from './options.js';
import type { LoginState } from './session.js';
import { unpackTokens, type StoredTokens } from './tokens.js';
import { storeUnavailable } from './store-errors.js';

/** One version of a login's tokens. Versions only grow; only the refresh-lock holder writes a new one. */
export interface TokenRecord {
  readonly v: number;
  readonly tokens: StoredTokens;
  readonly claims?: Record<string, unknown> | undefined;
  readonly ended?: undefined;
}

/** Left behind when a login ends at refresh time, so that sibling processes end it too without asking the server. */
export interface EndedRecord {
  readonly v: number;
  readonly ended: true;
}

export type StoreEntry = TokenRecord | EndedRecord;

/**
 * The per-login token set, the source of truth at refresh time (the session copy is a cache that a concurrent,
 * stale session save can roll back). With `redis`: one key per login, `<keyPrefix>tokens:<loginId>`, holding
 * `{ v, tokens, claims }` with the session's TTL. Without: a bounded in-process map (single process only).
 */
export interface TokenStore {
  /**
   * Records version 1 of a new login with its whole token set, the raw ID token included (with `redis`: one
   * `SET … EX`; without: the in-process map).
   */
  create(login: LoginState, tokens: StoredTokens, ttlSeconds: number): Promise<void>;
  /** The stored entry, or undefined when there is none (never written, expired, evicted). */
  read(loginId: string): Promise<StoreEntry | undefined>;
  /** Writes `entry` unless the store already holds that version or a newer one; false then (someone else won). */
  write(loginId: string, entry: StoreEntry, ttlSeconds: number): Promise<boolean>;
  /**
   * Ends a login for good (logout): a tombstone with {@link FINAL_VERSION}, not a deletion, so that a refresh already
   * in flight when the user logged out cannot write its new tokens into an empty key and bring the login back.
   * Returns the entry it replaced, read in the same step, so that no refresh can slip newer tokens in between.
   */
  end(loginId: string, ttlSeconds: number): Promise<StoreEntry | undefined>;
}

/** A version no refresh can ever beat: once a login is ended with it, every process treats it as ended. */
export const FINAL_VERSION = Number.MAX_SAFE_INTEGER;

/** connect-redis's TTL when neither the store's `ttl` nor the cookie say otherwise. */
const DEFAULT_SESSION_TTL_SECONDS = 86_400;

/**
 * The newest tokens of a login whose store entry was just ended (`entry`: what `end()` returned): the store's set when
 * it is the whole one and not older than the session's copy, else the session's copy. What a logout revokes.
 */
export function newestTokens(entry: StoreEntry | undefined, login: LoginState): StoredTokens | undefined {
  return entry !== undefined && !entry.ended && entry.v >= (login.version ?? 1) ? entry.tokens : unpackTokens(login.tokens);
}

/**
 * How long what a back-channel logout needs of a login lasts, in seconds: its index entries (so that the logout can find
 * its session) and the tombstone of a login ended outside its own request (a back-channel logout, a failed or
 * logged-out callback). At least `sessionTtl`, how long the login's session lives in its store once saved (a copy that
 * a request in flight saves back after the logout gets that too, and must find the tombstone for as long as it lives),
 * and at least `sessionIndexTtl`.
 */
export function loginLifetimeSeconds(config: ResolvedConfig, sessionTtl: number): number {
  return Math.max(config.sessionIndexTtl, sessionTtl);
}

/** The parts of a session (express-session's object, or its stored JSON) that decide its TTL in the store. */
interface SessionLike {
  cookie?: { expires?: unknown; originalMaxAge?: unknown };
  touch?: () => void;
}

/**
 * How long the request's session will live in its store once this request saves or touches it, in seconds: what
 * connect-redis computes then (its `ttl` option when it is a function, else the cookie's expiry, else its `ttl` number,
 * else one day). Token-store keys get this TTL, so they never outlive the session they belong to, nor die long before.
 */
export function sessionTtlSeconds(req: Request): number {
  const session = (req as { session?: SessionLike }).session;
  // During a request the cookie still carries the expiry of the session's last save; express-session resets it to a
  // full maxAge (touch) before it saves or touches the session at the end. Reset it now, as it will be then.
  if (typeof session?.cookie?.originalMaxAge === 'number' && typeof session.touch === 'function') session.touch();
  return storeTtlSeconds((req as { sessionStore?: unknown }).sessionStore, session);
}

/**
 * {@link sessionTtlSeconds} for a session read from the store (another browser's, as a back-channel logout reads it):
 * what it would live if a request that loaded it saved it back now, with its cookie reset to a full `maxAge`.
 */
export function storedSessionTtlSeconds(store: unknown, session: SessionLike | undefined): number {
  const maxAge = session?.cookie?.originalMaxAge;
  const touched = typeof maxAge === 'number' ? { ...session, cookie: { ...session?.cookie, expires: new Date(Date.now() + maxAge) } } : session;
  return storeTtlSeconds(store, touched);
}

function storeTtlSeconds(store: unknown, session: SessionLike | undefined): number {
  const storeTtl = (store as { ttl?: unknown } | undefined)?.ttl;
  let ttl: unknown;
  if (typeof storeTtl === 'function') {
    try {
      ttl = (storeTtl as (this: unknown, sess: unknown) => unknown).call(store, session);
    } catch {
      ttl = undefined;
    }
  } else if (session?.cookie?.expires instanceof Date || typeof session?.cookie?.expires === 'string') {
    ttl = Math.ceil((new Date(session.cookie.expires).getTime() - Date.now()) / 1000);
  } else {
    ttl = storeTtl;
  }
  return typeof ttl === 'number' && Number.isFinite(ttl) && ttl >= 1 ? Math.ceil(ttl) : DEFAULT_SESSION_TTL_SECONDS;
}

/** Accepts only what this library wrote; anything else counts as absent and the session copy is used. */
function parseEntry(raw: string | null): StoreEntry | undefined {
  if (raw === null) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const entry = value as { v?: unknown; ended?: unknown; tokens?: unknown };
  if (typeof entry.v !== 'number' || !Number.isSafeInteger(entry.v) || entry.v < 1) return undefined;
  if (entry.ended === true) return { v: entry.v, ended: true };
  const tokens = entry.tokens as Partial<StoredTokens> | undefined;
  if (typeof tokens !== 'object' || tokens === null || typeof tokens.accessToken !== 'string' || typeof tokens.tokenType !== 'string') {
    return undefined;
  }
  return entry as unknown as TokenRecord;
}

function serialise(entry: StoreEntry): string {
  return JSON.stringify(entry.ended ? { v: entry.v, ended: true } : { v: entry.v, tokens: entry.tokens, claims: entry.claims });
}

// Compare-and-set on the version, in one round trip: a holder whose lease ran out must not overwrite a newer version.
const WRITE_IF_NEWER = `
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded.v) and tonumber(decoded.v) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1`;

// Swaps in the tombstone and returns what it replaced, in one step; a tombstone already there stays.
const END_LOGIN = `
local previous = redis.call('GET', KEYS[1])
if previous then
  local ok, decoded = pcall(cjson.decode, previous)
  if ok and type(decoded) == 'table' and decoded.ended == true and tonumber(decoded.v) == ${FINAL_VERSION} then
    return previous
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return previous`;

/** Entries kept in-process without `redis`; the oldest go first. Evicted logins fall back to their session copy. */
export const MAX_LOCAL_ENTRIES = 10_000;

function createLocalStore(): TokenStore {
  const entries = new Map<string, { entry: StoreEntry; until: number }>();
  const store: TokenStore = {
    async create(login, tokens, ttlSeconds) {
      await store.write(login.id, { v: login.version ?? 1, tokens, claims: login.claims }, ttlSeconds);
    },
    async read(loginId) {
      const found = entries.get(loginId);
      if (found === undefined) return undefined;
      if (found.until <= Date.now()) {
        entries.delete(loginId);
        return undefined;
      }
      return found.entry;
    },
    async write(loginId, entry, ttlSeconds) {
      const now = Date.now();
      const found = entries.get(loginId);
      if (found !== undefined && found.until > now && found.entry.v >= entry.v) return false;
      entries.delete(loginId);
      if (entries.size >= MAX_LOCAL_ENTRIES) {
        for (const [key, value] of entries) if (value.until <= now) entries.delete(key);
        if (entries.size >= MAX_LOCAL_ENTRIES) entries.delete(entries.keys().next().value as string);
      }
      entries.set(loginId, { entry, until: now + ttlSeconds * 1000 });
      return true;
    },
    async end(loginId, ttlSeconds) {
      const previous = await store.read(loginId);
      await store.write(loginId, { v: FINAL_VERSION, ended: true }, ttlSeconds);
      return previous;
    },
  };
  return store;
}

/** Builds the token store of one `auth()` instance. */
export function createTokenStore(config: ResolvedConfig): TokenStore {
  const redis = config.redis;
  if (redis === undefined) return createLocalStore();
  const key = (loginId: string) => `${config.keyPrefix}tokens:${loginId}`;
  const store: TokenStore = {
    async create(login, tokens, ttlSeconds) {
      const entry: TokenRecord = { v: login.version ?? 1, tokens, claims: login.claims };
      try {
        await redis.set(key(login.id), serialise(entry), 'EX', ttlSeconds);
      } catch (err) {
        throw storeUnavailable(err);
      }
    },
    async read(loginId) {
      try {
        return parseEntry(await redis.get(key(loginId)));
      } catch (err) {
        throw storeUnavailable(err);
      }
    },
    async write(loginId, entry, ttlSeconds) {
      try {
        return (await redis.eval(WRITE_IF_NEWER, 1, key(loginId), entry.v, serialise(entry), ttlSeconds)) === 1;
      } catch (err) {
        throw storeUnavailable(err);
      }
    },
    async end(loginId, ttlSeconds) {
      try {
        return parseEntry((await redis.eval(END_LOGIN, 1, key(loginId), serialise({ v: FINAL_VERSION, ended: true }), ttlSeconds)) as string | null);
      } catch (err) {
        throw storeUnavailable(err);
      }
    },
  };
  return store;
}

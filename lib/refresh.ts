import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as client from 'openid-client';
import { dpopDowngrade, dpopOptionsFor } from './dpop.js';
import { AuthError, AuthErrorCode } from './errors.js';
import { withIssuedTokens } from './issued.js';
import { checkSignature } from './keys.js';
import type { ResolvedConfig } from './options.js';
import type { Runtime } from './runtime.js';
import type { LoginState } from './session.js';
import type { StoreEntry, TokenRecord } from './token-store.js';
import { DELETE_IF_VALUE } from './once.js';
import { revokeUnused, type RevocableTokens } from './revocation.js';
import { storeUnavailable } from './store-errors.js';
import { isExpired, toStoredTokens, unpackTokens, type StoredTokens } from './tokens.js';
import { isDeadRefreshToken, refreshError } from './upstream.js';

/** What the refresher needs from the runtime (everything but itself). */
export type RefreshServices = Omit<Runtime, 'refresher'>;

/** Brings a login's tokens up to date, once per login however many requests and processes ask. */
export interface Refresher {
  /**
   * The login's current tokens. Reads the token store first (a sibling may have refreshed already); refreshes only
   * when they are still due or, with `force`, when no version newer than `login.version` exists.
   */
  current(login: LoginState, options: { force: boolean; ttlSeconds: number }): Promise<TokenRecord>;
}

/**
 * The skew actually used for a token: `refreshSkew`, but never more than half of its issued lifetime, so that a token
 * living 60 s is not refreshed on every call.
 */
export function effectiveSkew(tokens: StoredTokens, refreshSkew: number): number {
  return tokens.lifetime === undefined ? refreshSkew : Math.min(refreshSkew, tokens.lifetime / 2);
}

/** True when the access token is expired or due within the effective skew. Unknown expiry is never due. */
export function needsRefresh(tokens: StoredTokens, refreshSkew: number, now?: number): boolean {
  return isExpired(tokens, effectiveSkew(tokens, refreshSkew), now);
}

/**
 * How long the cross-process lock is held at most. Everything done under it is bounded by the request timeout
 * (openid-client counts it in whole seconds): the token request, its one retry for a DPoP nonce, and the fetch of the
 * issuer's keys for the refreshed ID token's signature. So a live holder always finishes within the lease; a dead one
 * blocks the login for no longer than the lease.
 */
export function leaseMs(config: ResolvedConfig): number {
  return 3 * Math.max(1, Math.ceil(config.httpTimeout / 1000)) * 1000 + 1000;
}

/**
 * The one place where the refresh-token grant is requested. Request options that bind the request to the login (a
 * DPoP proof, for instance) belong here, so that every refresh carries them.
 */
export async function requestRefresh(runtime: RefreshServices, login: LoginState, refreshToken: string) {
  const configuration = await runtime.server();
  // A DPoP-bound login proves its key on every refresh (RFC 9449 §5; public clients' refresh tokens are bound to it).
  return client.refreshTokenGrant(configuration, refreshToken, undefined, await dpopOptionsFor(runtime, login));
}

type RefreshResponse = Awaited<ReturnType<typeof requestRefresh>>;

// Errors that end the login, as opposed to login_required for a token that merely cannot be renewed.
const endedErrors = new WeakSet<AuthError>();

/** True when `err` means the login is over and must leave the session. */
export function endsLogin(err: unknown): boolean {
  return err instanceof AuthError && endedErrors.has(err);
}

function loginEnded(message: string, upstream?: AuthError): AuthError {
  const err = new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, message, {
    ...(upstream === undefined ? {} : { cause: upstream.cause ?? upstream }),
    ...(upstream?.error === undefined ? {} : { error: upstream.error }),
    ...(upstream?.errorDescription === undefined ? {} : { errorDescription: upstream.errorDescription }),
  });
  endedErrors.add(err);
  return err;
}

/**
 * A refreshed ID token must name the same login (OpenID Connect Core §12.2): the same issuer, subject, audience and
 * authorized party (`azp`: none if the first had none), an `auth_time`, when it has one, that is still the time of
 * the original authentication, and a `nonce`, when it has one, that is the original authentication's (one of another
 * login's would be an ID token replayed from it; openid-client checks no nonce at refresh). Its `iat` is the time it
 * was issued, so one older than the ID token it replaces (beyond `tolerance` seconds of clock skew between the server's
 * nodes) is an earlier token replayed.
 */
function checkSameLogin(before: Record<string, unknown>, after: Record<string, unknown>, tolerance: number): void {
  const audiences = (value: unknown) => new Set(Array.isArray(value) ? value.map(String) : value === undefined ? [] : [String(value)]);
  const a = audiences(before.aud);
  const b = audiences(after.aud);
  const sameAudience = a.size === b.size && [...a].every((aud) => b.has(aud));
  const changed = [
    before.iss !== after.iss && 'iss',
    before.sub !== after.sub && 'sub',
    !sameAudience && 'aud',
    before.azp !== after.azp && 'azp',
    before.auth_time !== undefined && after.auth_time !== undefined && before.auth_time !== after.auth_time && 'auth_time',
    // §12.2 says SHOULD NOT for a nonce at all, MUST be the original one when present: a first ID token without one
    // leaves nothing a present one could equal.
    after.nonce !== undefined && before.nonce !== after.nonce && 'nonce',
  ].filter(Boolean);
  if (changed.length > 0) {
    throw loginEnded(`The refreshed ID token names another login (${changed.join(', ')} changed; OpenID Connect Core §12.2); log in again.`);
  }
  if (typeof before.iat === 'number' && typeof after.iat === 'number' && after.iat + tolerance < before.iat) {
    throw loginEnded('The refreshed ID token was issued before the one it replaces (iat; OpenID Connect Core §12.2); log in again.');
  }
}

interface Lock {
  readonly key: string;
  readonly owner: string;
}

// Extends the lease only while the lock is still ours.
const RENEW_IF_OWNER = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;

/** Without `redis` every acquisition succeeds: the in-process single flight is the only guard. */
function createLocks(config: ResolvedConfig, lease: number) {
  const redis = config.redis;
  return {
    async acquire(loginId: string): Promise<Lock | undefined> {
      const lock = { key: `${config.keyPrefix}lock:${loginId}`, owner: randomBytes(16).toString('base64url') };
      if (redis === undefined) return lock;
      try {
        return (await redis.set(lock.key, lock.owner, 'PX', lease, 'NX')) === 'OK' ? lock : undefined;
      } catch (err) {
        throw storeUnavailable(err);
      }
    },
    /**
     * A full lease from now, if the lock is still ours: when it now ends (ms since the epoch), or undefined when it ran
     * out (a stalled process, a slow Redis) and another holder may already have rotated the refresh token this one was
     * about to send.
     */
    async renew(lock: Lock): Promise<number | undefined> {
      const until = Date.now() + lease;
      if (redis === undefined) return until;
      try {
        return Number(await redis.eval(RENEW_IF_OWNER, 1, lock.key, lock.owner, String(lease))) === 1 ? until : undefined;
      } catch (err) {
        throw storeUnavailable(err);
      }
    },
    async release(lock: Lock): Promise<void> {
      if (redis === undefined) return;
      // A failed release is harmless: the lease ends the lock anyway.
      await redis.eval(DELETE_IF_VALUE, 1, lock.key, lock.owner).catch(() => undefined);
    },
  };
}

/** Builds the refresher of one `auth()` instance. */
export function createRefresher(runtime: RefreshServices): Refresher {
  const { config, tokenStore } = runtime;
  const lease = leaseMs(config);
  const locks = createLocks(config, lease);
  // One pending refresh per login in this process; every concurrent caller of the login shares it.
  const inflight = new Map<string, Promise<TokenRecord>>();

  function fromSession(login: LoginState): TokenRecord {
    const tokens = unpackTokens(login.tokens);
    // Only a damaged session gets here without tokens; nothing is left to refresh with.
    if (tokens === undefined) throw loginEnded('The tokens of this login are no longer known; log in again.');
    return { v: login.version ?? 1, tokens, claims: login.claims };
  }

  /** The newest version known: the store's, unless it has none (or an older one) and the session copy must do. */
  async function latest(login: LoginState): Promise<TokenRecord> {
    const entry: StoreEntry | undefined = await tokenStore.read(login.id);
    if (entry?.ended) throw loginEnded('This login has ended; log in again.');
    return entry === undefined || entry.v < (login.version ?? 1) ? fromSession(login) : entry;
  }

  /** Writes a new version, or returns the one that beat it there. */
  async function commit(login: LoginState, entry: StoreEntry, ttlSeconds: number): Promise<TokenRecord | undefined> {
    if (await tokenStore.write(login.id, entry, ttlSeconds)) return undefined;
    return latest(login);
  }

  /** Ends the login for every process (a tombstone version), unless a sibling stored newer tokens meanwhile. */
  async function end(login: LoginState, record: TokenRecord, ttlSeconds: number, err: AuthError): Promise<TokenRecord> {
    const winner = await commit(login, { v: record.v + 1, ended: true }, ttlSeconds);
    if (winner !== undefined) return winner;
    throw err;
  }

  /**
   * Ends the login over a token response it must not keep: the tombstone first, so that no other process presents the
   * spent refresh token meanwhile, then the response's tokens are revoked, with the login's refresh token when the
   * response did not rotate it (still valid, and held by nobody now). Not when a sibling's newer version won instead:
   * revoking a refresh token ends the whole grant at many servers, the sibling's tokens with it.
   */
  async function endRefused(login: LoginState, record: TokenRecord, ttlSeconds: number, issued: RevocableTokens, err: AuthError): Promise<TokenRecord> {
    try {
      return await end(login, record, ttlSeconds, err);
    } catch (caught) {
      if (endsLogin(caught)) await revokeUnused(runtime.server(), issued);
      throw caught;
    }
  }

  async function refreshUnderLock(
    login: LoginState,
    record: TokenRecord,
    ttlSeconds: number,
    rereadAllowed: boolean,
    lockedUntil: number,
    renew: () => Promise<number | undefined>,
  ): Promise<TokenRecord> {
    const refreshToken = record.tokens.refreshToken;
    if (refreshToken === undefined) {
      throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'The access token has expired and there is no refresh token; log in again.');
    }
    let response: RefreshResponse;
    // Tokens of an answer openid-client refused inside the grant (its ID token's claims): the server has rotated already.
    let issued: RevocableTokens | undefined;
    try {
      response = await withIssuedTokens(
        refreshToken,
        () => requestRefresh(runtime, login, refreshToken),
        (tokens) => (issued = { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken ?? refreshToken }),
      );
    } catch (caught) {
      const err = refreshError(caught, [refreshToken, record.tokens.accessToken, config.clientSecret]);
      if (err.code !== AuthErrorCode.LOGIN_REQUIRED) {
        // An answer refused for its shape (no access token, say) that rotated the refresh token: the new one is held by
        // nobody, so it is revoked; the login keeps the old one, spent now, and ends at its next use. An answer that
        // did not rotate leaves the login's refresh token valid: nothing of it is revoked, since revoking its access
        // token alone may end the whole grant at some servers (RFC 7009 §2.1).
        if (issued?.refreshToken !== undefined && issued.refreshToken !== refreshToken) await revokeUnused(runtime.server(), issued);
        throw err;
      }
      const ended = endsLoginError(err);
      if (isDeadRefreshToken(err.error) && rereadAllowed) {
        // A sibling may have rotated the refresh token under us (its lease and ours overlapped): believe the server only
        // once the store has nothing newer.
        const again = await latest(login);
        if (again.v > record.v) {
          if (!needsRefresh(again.tokens, config.refreshSkew)) return again;
          // Another refresh token is about to go out: the lock must still be ours, for a whole lease, as for the first.
          const renewedUntil = await renew();
          if (renewedUntil === undefined) throw new LockLost();
          return refreshUnderLock(login, again, ttlSeconds, false, renewedUntil, renew);
        }
      }
      return issued === undefined ? end(login, record, ttlSeconds, ended) : endRefused(login, record, ttlSeconds, issued, ended);
    }

    // The answer's tokens, with what it left out kept from the login (an unrotated refresh token, say).
    const answered = toStoredTokens(response, record.tokens);
    // Only a login bound to a key can be downgraded: one made before `dpop` was turned on sent no proof and stays Bearer.
    const downgrade = dpopDowngrade(config, login, response);
    // The server may have rotated the refresh token already, so the login cannot be kept as it was (the old one is
    // spent), and the new tokens are not what the app asked for: the login ends.
    if (downgrade !== undefined) return endRefused(login, record, ttlSeconds, answered, loginEnded(`${downgrade} Log in again.`));
    let claims = record.claims;
    let tokens = answered;
    if (response.id_token !== undefined) {
      // Checked here, once the new tokens are in hand: the old refresh token is spent, so they must not be lost.
      const signature = await checkSignature(runtime.keys, (await runtime.server()).serverMetadata(), response.id_token);
      if (signature === 'invalid') {
        return endRefused(login, record, ttlSeconds, answered, loginEnded('The refreshed ID token has no valid signature from the issuer; log in again.'));
      }
      const idClaims = config.openid ? response.claims() : undefined;
      if (idClaims !== undefined && record.claims !== undefined) {
        // Even unverified (keys unreachable): claims naming someone else mean this response must not be kept.
        try {
          checkSameLogin(record.claims, idClaims, config.clockTolerance);
        } catch (err) {
          return endRefused(login, record, ttlSeconds, answered, err as AuthError);
        }
      }
      if (signature === 'valid' && idClaims !== undefined) {
        // A refreshed ID token may leave auth_time and nonce out; the original's stay, to check the next one against (§12.2).
        const authTime = idClaims.auth_time === undefined ? record.claims?.auth_time : undefined;
        const nonce = idClaims.nonce === undefined ? record.claims?.nonce : undefined;
        claims = {
          ...idClaims,
          ...(authTime === undefined ? {} : { auth_time: authTime }),
          ...(nonce === undefined ? {} : { nonce }),
        };
      } else if (signature === 'unknown') {
        // The keys could not be fetched. The tokens came from the token endpoint over TLS and are kept; an ID token
        // nothing vouches for, and its claims, are not.
        tokens = record.tokens.idToken === undefined ? omitIdToken(tokens) : { ...tokens, idToken: record.tokens.idToken };
      }
    }
    const next: TokenRecord = { v: record.v + 1, tokens, claims };
    return commitRefreshed(login, next, ttlSeconds, lockedUntil);
  }

  /**
   * Stores tokens the server has already rotated: the old refresh token is spent, so losing the new one to a Redis
   * blip would end the login at the next refresh (reuse detection). A failed write is retried while the lock is ours;
   * after that the new version is still returned, and the session copy (saved with the response) is the one left.
   */
  async function commitRefreshed(login: LoginState, next: TokenRecord, ttlSeconds: number, lockedUntil: number): Promise<TokenRecord> {
    for (let delay = 25; ; delay = Math.min(delay * 2, 200)) {
      try {
        return (await commit(login, next, ttlSeconds)) ?? next;
      } catch (err) {
        if (endsLogin(err)) {
          // The login ended while the server was answering (a logout's tombstone): nobody will ever use these tokens,
          // and the logout could only revoke the ones it knew.
          await revokeUnused(runtime.server(), next.tokens);
          throw err;
        }
        if (!(err instanceof AuthError && err.code === AuthErrorCode.SESSION_UNAVAILABLE)) throw err;
        if (Date.now() + delay >= lockedUntil) return next;
        await sleep(delay);
      }
    }
  }

  function settled(record: TokenRecord, force: boolean, seen: number): boolean {
    return force ? record.v > seen : !needsRefresh(record.tokens, config.refreshSkew);
  }

  async function run(login: LoginState, force: boolean, ttlSeconds: number): Promise<TokenRecord> {
    // Discovery first: it must not eat into the lease.
    await runtime.server();
    const seen = login.version ?? 1;
    const deadline = Date.now() + 2 * lease;
    let delay = 20;
    for (;;) {
      const record = await latest(login);
      if (settled(record, force, seen)) return record;
      const lock = await locks.acquire(login.id);
      if (lock === undefined) {
        // Another process is refreshing: wait for its new version (or for its lease to run out, then take over).
        if (Date.now() >= deadline) throw refreshFailed('Another process has been refreshing this login for too long; try again.');
        await sleep(delay);
        delay = Math.min(delay * 2, 200);
        continue;
      }
      try {
        // The previous holder may have finished between our read and our lock.
        const current = await latest(login);
        if (settled(current, force, seen)) return current;
        // Nothing bounds the time spent since the lock was taken (Redis round trips, a stalled event loop): make sure it
        // is still ours, for a whole lease, before its refresh token goes out. Lost: another holder may be refreshing.
        const renew = () => locks.renew(lock);
        const lockedUntil = await renew();
        if (lockedUntil === undefined) continue;
        return await refreshUnderLock(login, current, ttlSeconds, true, lockedUntil, renew);
      } catch (err) {
        if (err instanceof LockLost) continue;
        throw err;
      } finally {
        await locks.release(lock);
      }
    }
  }

  async function current(login: LoginState, options: { force: boolean; ttlSeconds: number }): Promise<TokenRecord> {
    const pending = inflight.get(login.id);
    if (pending !== undefined) {
      const record = await pending;
      // A forced refresh is satisfied only by a version this caller has not seen.
      if (!options.force || record.v > (login.version ?? 1)) return record;
      return current(login, options);
    }
    const op: Promise<TokenRecord> = run(login, options.force, options.ttlSeconds).finally(() => {
      if (inflight.get(login.id) === op) inflight.delete(login.id);
    });
    inflight.set(login.id, op);
    return op;
  }

  return { current };
}

/** The lock ran out before a second refresh token could go out: back to waiting, as for a lock never taken. */
class LockLost extends Error {}

function omitIdToken(tokens: StoredTokens): StoredTokens {
  const { idToken: _unverified, ...rest } = tokens;
  return rest;
}

function refreshFailed(message: string): AuthError {
  return new AuthError(AuthErrorCode.REFRESH_FAILED, 503, message);
}

/** Re-issues a login-ending `login_required` as one the session layer recognises. */
function endsLoginError(err: AuthError): AuthError {
  if (endedErrors.has(err)) return err;
  return loginEnded(err.message, err);
}

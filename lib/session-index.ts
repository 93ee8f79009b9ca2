import { createHash } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { writableState, type SessionWithState } from './session.js';
import { storeUnavailable } from './store-errors.js';

/** Who a back-channel logout token names: the OP session (`sid`), the user (`sub`), or both. */
export interface LogoutSubject {
  sid?: string | undefined;
  sub?: string | undefined;
}

/**
 * Which express-session ids belong to an OP session (`sid`) or a user (`sub`), so that a back-channel logout can
 * destroy them in the shared store. Redis sets with a TTL, written at login and cleaned at logout.
 */
export interface SessionIndex {
  /** Records a login's session id under its `sid` and `sub`. */
  add(sessionId: string, subject: LogoutSubject, ttlSeconds: number): Promise<void>;
  /** Forgets session ids (local logout, or after a back-channel logout destroyed them). */
  remove(sessionIds: string | readonly string[], subject: LogoutSubject): Promise<void>;
  /**
   * The session ids a logout token names: `sid` alone, that OP session's; `sub` alone, all the user's; both, the
   * user's sessions of that OP session, and the user's logins whose ID token carried no `sid` (nothing tells
   * whether they belong to it: ended rather than left alive).
   */
  find(subject: LogoutSubject): Promise<string[]>;
  /**
   * Marks session ids a back-channel logout ended, for a login whose callback is still at work: it may save the session
   * after the logout destroyed it (or before the logout could see it). The callback checks the mark after its saves.
   */
  markEnded(sessionIds: readonly string[]): Promise<void>;
  /**
   * Marks what a back-channel logout ended, with the logout token's `iat`, before it looks the sessions up: a login
   * whose callback has not indexed it yet cannot be found, and checks these marks instead. A `sid` marks that OP
   * session; a `sub` alone marks the user; `sid` and `sub` together also mark the user's logins without a `sid`, which
   * {@link SessionIndex.find} ends too. Each mark ends only logins whose ID token was issued before the logout
   * ({@link loggedOutBefore}): a server that logs a user out of this client alone may keep the OP session, and the
   * user's next login, newer than the logout, must stand. A mark is never lowered: an older logout delivered later
   * leaves a newer one's mark as it is.
   */
  markLoggedOut(subject: LogoutSubject, issuedAt: number): Promise<void>;
  /**
   * Whether a back-channel logout marked this session id, or marked the login's OP session or user (see
   * {@link SessionIndex.markLoggedOut}) after its ID token was issued.
   */
  wasEnded(sessionId: string, login: LoginSubject): Promise<boolean>;
}

/** What the logout marks are checked against: the login's `sid`/`sub`, its ID token's `iat`, and when its code exchange was sent. */
export interface LoginSubject extends LogoutSubject {
  issuedAt?: number | undefined;
  /** `Date.now()` when the login's code exchange was sent. */
  exchangedAt: number;
}

/**
 * How long a mark lives. It only has to outlast one callback's session saves (from its index write to the end of its
 * response); session ids are never reused, so a mark that outlives that harms nothing.
 */
const ENDED_MARK_TTL_SECONDS = 600;

/**
 * Writes a logout mark (`<logout iat> <ms when marked>`, ARGV[1] and ARGV[2]) unless the key already holds a later one:
 * the later `iat`, or the same `iat` marked later (or in the old form, without a time). Several logouts write the same
 * key (a user's, or the sid-less logins of a user with several OP sessions), and one delivered late, a retry of an older
 * token, must not lower the mark and let through the logins a newer logout ends. The TTL is renewed either way.
 */
const MARK_IF_LATER = `
local current = redis.call('GET', KEYS[1])
local iat = current and tonumber(string.match(current, '^(%S+)'))
if iat then
  local at = tonumber(string.match(current, '^%S+ (%S+)$'))
  local newIat, newAt = tonumber(ARGV[1]), tonumber(ARGV[2])
  if iat > newIat or (iat == newIat and (at == nil or at >= newAt)) then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
return 1`;

/** The `sid`/`sub` of validated ID-token claims; non-strings are ignored (they cannot come from a valid ID token). */
export function subjectOf(claims: Record<string, unknown> | undefined): LogoutSubject {
  const sid = claims?.sid;
  const sub = claims?.sub;
  return { sid: typeof sid === 'string' ? sid : undefined, sub: typeof sub === 'string' ? sub : undefined };
}

function hashed(value: string): string {
  // Bounded, printable keys whatever the provider puts in sid/sub; the values themselves stay out of Redis key names.
  return createHash('sha256').update(value).digest('base64url');
}

/**
 * `issuer`: the issuer identifier the logins and logout tokens come from. A `sub` or `sid` is unique only within its
 * issuer (OpenID Connect Core §2), and apps of different servers may share a Redis and the default `keyPrefix`: one
 * server's logout must neither find nor un-index the sessions of another server's user who has the same `sub`.
 */
export function createSessionIndex(redis: Redis | Cluster, keyPrefix: string, issuer: string): SessionIndex {
  // A space never occurs in an issuer URL, so that no other issuer and value make the same string.
  const scoped = (value: string): string => hashed(`${issuer} ${value}`);
  // `nosid`: the user's logins whose ID token had no sid, for logout tokens that name one (an OP that began sending
  // sids after these logins, e.g. once the client was registered with backchannel_logout_session_required).
  // `ended-`: the same three, as marks of what a logout ended (markLoggedOut) rather than sets of session ids.
  const keys = (subject: LogoutSubject, kind: '' | 'ended-' = ''): { sid?: string; sub?: string; nosid?: string } => ({
    ...(subject.sid === undefined ? {} : { sid: `${keyPrefix}logout:${kind}sid:${scoped(subject.sid)}` }),
    ...(subject.sub === undefined
      ? {}
      : { sub: `${keyPrefix}logout:${kind}sub:${scoped(subject.sub)}`, nosid: `${keyPrefix}logout:${kind}nosid:${scoped(subject.sub)}` }),
  });

  // The keys a login lives under: its sid's and sub's, and the user's sid-less ones when its ID token had no sid.
  const loginKeys = (subject: LogoutSubject, kind: '' | 'ended-' = ''): string[] => {
    const { sid, sub, nosid } = keys(subject, kind);
    return [sid, sub, sid === undefined ? nosid : undefined].filter((key) => key !== undefined);
  };

  return {
    async add(sessionId, subject, ttlSeconds) {
      // One MULTI per key: a Cluster may place the keys on different slots.
      await Promise.all(loginKeys(subject).map((key) => redis.multi().sadd(key, sessionId).expire(key, ttlSeconds).exec().then(failedReply)));
    },
    async remove(sessionIds, subject) {
      const members = typeof sessionIds === 'string' ? [sessionIds] : [...sessionIds];
      if (members.length === 0) return;
      const { sid, sub, nosid } = keys(subject);
      await Promise.all([sid, sub, nosid].filter((key) => key !== undefined).map((key) => redis.srem(key, ...members)));
    },
    async find(subject) {
      const { sid, sub, nosid } = keys(subject);
      if (sid === undefined) return sub === undefined ? [] : redis.smembers(sub);
      if (sub === undefined || nosid === undefined) return redis.smembers(sid);
      const [bySid, bySub, withoutSid] = await Promise.all([redis.smembers(sid), redis.smembers(sub), redis.smembers(nosid)]);
      // Intersected here rather than with SINTER, which a Cluster refuses across slots.
      const ofUser = new Set(bySub);
      return [...new Set([...bySid.filter((id) => ofUser.has(id)), ...withoutSid])];
    },
    async markEnded(sessionIds) {
      await Promise.all(sessionIds.map((id) => redis.set(`${keyPrefix}logout:ended:${hashed(id)}`, '1', 'EX', ENDED_MARK_TTL_SECONDS)));
    },
    async markLoggedOut(subject, issuedAt) {
      const { sid, sub, nosid } = keys(subject, 'ended-');
      const markedAt = Date.now();
      // A sub beside a sid marks the user's sid-less logins only: their other logins belong to other OP sessions.
      await Promise.all(
        [sid, sid === undefined ? sub : nosid]
          .filter((key) => key !== undefined)
          .map((key) => redis.eval(MARK_IF_LATER, 1, key, issuedAt, markedAt, ENDED_MARK_TTL_SECONDS)),
      );
    },
    async wasEnded(sessionId, login) {
      // One command per key: a Cluster may place them on different slots.
      const [session, ...marks] = await Promise.all([
        redis.exists(`${keyPrefix}logout:ended:${hashed(sessionId)}`),
        ...loginKeys(login, 'ended-').map((key) => redis.get(key)),
      ]);
      if (session === 1) return true;
      return marks.some((mark) => mark !== null && loggedOutBefore(mark, login));
    },
  };
}

/**
 * Whether a logout mark (`<logout iat> <Date.now() when marked>`) ends this login: its ID token was issued before the
 * logout, by the server's clock. Both `iat`s are whole seconds: within the same second, the login ended if its code
 * exchange was sent before the mark was written (the race the marks are for: its ID token may be older than the logout
 * however late its answer came), and stands if the exchange came after the mark (the user signing in again after a
 * logout, who needs more than the time of a redirect to do so). Without an `iat`, or a time of marking, the login is
 * taken to be the older.
 */
function loggedOutBefore(mark: string, login: LoginSubject): boolean {
  const [logoutIat, markedAt] = mark.split(' ').map(Number);
  if (login.issuedAt === undefined || logoutIat === undefined || logoutIat > login.issuedAt) return true;
  if (logoutIat < login.issuedAt) return false;
  return markedAt === undefined || !(markedAt < login.exchangedAt);
}

function failedReply(replies: Array<[Error | null, unknown]> | null): void {
  const failed = replies?.find(([err]) => err !== null)?.[0];
  if (replies === null || failed) throw failed ?? new Error('The Redis transaction was aborted.');
}

/**
 * Indexes the login just written to `session` (at the callback, after the session id was rotated) for `ttlSeconds`
 * (`loginLifetimeSeconds`: as long as its session can live), and says whether it did. When Redis fails, the login is
 * removed again before the error leaves: a login that back-channel logout could not find must not exist.
 */
export async function indexLogin(index: SessionIndex | undefined, ttlSeconds: number, session: SessionWithState): Promise<boolean> {
  const state = writableState(session);
  if (index === undefined || state.login === undefined) return false;
  const subject = subjectOf(state.login.claims);
  if (subject.sid === undefined && subject.sub === undefined) return false;
  try {
    await index.add(session.id, subject, ttlSeconds);
  } catch (err) {
    delete state.login;
    throw storeUnavailable(err, 'Redis is unavailable; the sign-in was not completed. Try again.');
  }
  return true;
}

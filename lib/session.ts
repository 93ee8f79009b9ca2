import type { Request } from 'express';
import type { Session, SessionData, Store } from 'express-session';
import type { JWK } from 'jose';
import { AuthError, AuthErrorCode } from './errors.js';
import type { PackedTokens } from './tokens.js';
import type { Transaction } from './transaction.js';
import { storeUnavailable } from './store-errors.js';

/** What one login keeps in the server-side session. The browser only ever holds the session id. */
export interface LoginState {
  /** Random id of this login: names its token-store key and refresh lock, survives session-id rotation. */
  id: string;
  /** Validated ID-token claims (undefined without `openid`). */
  claims?: Record<string, unknown>;
  /** What the `fetchUser` hook returned at login. */
  user?: Record<string, unknown>;
  /**
   * The session's copy of the tokens, packed (`sessionCopy()`; read it with `unpackTokens()`). Sessions written by
   * earlier versions hold the unpacked object, which `unpackTokens()` also reads.
   */
  tokens: PackedTokens;
  /** The login's DPoP private key (RFC 9449), when `dpop` is on. Server-side only: the tokens are bound to it. */
  dpopKey?: JWK;
  /** Version of `tokens` in the token store (absent: 1, the login's own); the session copy is a cache of it. */
  version?: number;
}

/** The library's slice of the session, under one key so that it never collides with the app's data. */
export interface OAuthSessionState {
  /** Pending login transactions keyed by `state`, so several tabs can log in at once. */
  tx?: Record<string, Transaction>;
  login?: LoginState;
  /** A pending RP-initiated logout: the `state` sent to the end-session endpoint (see `routes/post-logout.ts`). */
  logout?: { state: string; createdAt: number };
}

/** The session key the library owns. */
export const SESSION_KEY = 'oauth';

export type SessionWithState = Session & { [SESSION_KEY]?: OAuthSessionState };

/** The session of a request, or a clear error when express-session is not mounted before `auth()`. */
export function requireSession(req: Request): SessionWithState {
  const session = (req as { session?: Session }).session;
  if (session === undefined || session === null) {
    throw new AuthError(
      AuthErrorCode.SESSION_MISSING,
      500,
      "req.session is missing: mount express-session (with a store such as connect-redis) before auth(): app.use(session({ ... })); app.use(auth({ ... })). If it is mounted, its cookie.path does not cover this request's path: leave it '/'.",
    );
  }
  return session as SessionWithState;
}

/** The library's state in a session, when there is any. Reading never marks the session as modified. */
export function readState(req: Request): OAuthSessionState | undefined {
  return (req as { session?: SessionWithState }).session?.[SESSION_KEY];
}

/** The library's state, created on first write. */
export function writableState(session: SessionWithState): OAuthSessionState {
  return (session[SESSION_KEY] ??= {});
}

function storeError(operation: string, err: unknown): AuthError {
  return storeUnavailable(err, `The session store failed to ${operation} the session; try again.`);
}

// express-session's callback methods, promise-wrapped once. A store failure becomes a 503: nobody is let in.
function wrap(operation: string, method: 'save' | 'regenerate' | 'destroy') {
  return function run(session: Session): Promise<void> {
    return new Promise((resolve, reject) => {
      session[method]((err?: unknown) => (err ? reject(storeError(operation, err)) : resolve()));
    });
  };
}

export const saveSession = wrap('save', 'save');
export const destroySession = wrap('destroy', 'destroy');

/** A session as its store holds it: express-session's data and the library's slot. */
export type StoredSession = SessionData & { [SESSION_KEY]?: OAuthSessionState };

/** Reads a session from the store by id (another browser's session: `req.session` is not it). */
export function readStoredSession(store: Store, id: string): Promise<StoredSession | undefined> {
  return new Promise((resolve, reject) => store.get(id, (err: unknown, session) => (err ? reject(err) : resolve((session ?? undefined) as StoredSession | undefined))));
}

/** Destroys a session in the store by id (another browser's session: `req.session` is not it). */
export function destroyStoredSession(store: Store, id: string): Promise<void> {
  return new Promise((resolve, reject) => store.destroy(id, (err?: unknown) => (err ? reject(err) : resolve())));
}

/**
 * Runs `then` after each successful save of this session object from now on, the one express-session makes as the
 * response ends included, whether or not the browser is still there to receive the response (a `finish` event would
 * not come for a dropped connection). Best effort: nobody is left to answer, and neither the save's callback nor the
 * response waits for it.
 */
export function afterEachSave(session: SessionWithState, then: () => Promise<void>): void {
  const save = session.save;
  // An own property, so only this request's session is concerned; not enumerable, as express-session's own methods,
  // so that no store serialiser (JSON drops functions, structured clone refuses them) ever sees it.
  Object.defineProperty(session, 'save', {
    configurable: true,
    writable: true,
    value: function saveThen(this: SessionWithState, callback?: (err?: unknown) => void) {
      return save.call(this, (err?: unknown) => {
        callback?.(err);
        if (err) return;
        void then().catch(() => undefined);
      });
    },
  });
}

/** Regenerates the session id (session fixation defence) and returns the new session object. */
export async function regenerateSession(req: Request): Promise<SessionWithState> {
  const session = requireSession(req);
  await wrap('regenerate', 'regenerate')(session);
  return requireSession(req);
}

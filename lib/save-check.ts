import type { Store } from 'express-session';
import { destroyStoredSession, SESSION_KEY, type StoredSession } from './session.js';
import { FINAL_VERSION, type TokenStore } from './token-store.js';
import { warn, WarningCode } from './warnings.js';

type SetCallback = (err?: unknown) => void;

// Sessions whose writes need no check here: the callback's new session. Until the browser has its cookie, only a
// back-channel logout can end its login, and the callback checks that logout's marks after each of its saves itself.
const checkedOtherwise = new WeakSet<object>();

/** Leaves the writes of this session object (this request's only) to the caller's own check after each save. */
export function checkedElsewhere(session: object): void {
  checkedOtherwise.add(session);
}

/**
 * Makes every session write through an express-session store that `auth()` has seen end with a check of the login the
 * written session holds.
 *
 * Why: a logout (`POST /logout`, back-channel, in any process) ends the login with its final tombstone and then destroys
 * the session. A request that loaded the session before that, and modifies it (the app's own session data, a refreshed
 * token copy), makes express-session write the whole session back as it ends: the ended login is back, and routes
 * behind `requireAuth()` would take it for a login for as long as the copy lives. Once such a write is done, the final
 * tombstone says the session was destroyed meanwhile: it is destroyed again.
 *
 * What it costs: one token-store read after each write of a session that holds a login, which the write's callback
 * waits for (express-session ends the response in it), so that the response that wrote the copy is only done once the
 * copy is gone. Most requests do not write: an unmodified session is only touched (`EXPIRE`), which cannot bring a
 * destroyed one back, and is not checked. When the read fails, the write still succeeds and the copy stays; its
 * tombstone still refuses it every refresh.
 *
 * The store is wrapped (its own `set`, once per store and token store) rather than each request's session, so that
 * a write from a route mounted before `auth()` is checked too, and a request that writes nothing costs nothing.
 */
export function createSaveCheck(tokenStore: TokenStore): (store: Store | undefined) => void {
  const wrapped = new WeakSet<Store>();
  let last: Store | undefined;

  // Never rejects: the write itself succeeded, and a failed check leaves what a check that never ran would.
  async function checkWritten(store: Store, sessionId: string, loginId: string): Promise<void> {
    try {
      const entry = await tokenStore.read(loginId);
      if (entry?.ended && entry.v === FINAL_VERSION) await destroyStoredSession(store, sessionId);
    } catch {
      // The copy stays; its tombstone still refuses it every refresh.
    }
  }

  return function checkSavesOf(store) {
    // Every request passes here: one comparison while the app keeps using the same store.
    if (store === last || store === undefined) return;
    last = store;
    if (wrapped.has(store)) return;
    wrapped.add(store);
    const set = store.set;
    try {
      // An own property, not enumerable, so that the store's class and whatever walks the store are left as they were.
      Object.defineProperty(store, 'set', {
        configurable: true,
        writable: true,
        value: function checkedSet(this: Store, sessionId: string, session: StoredSession, callback?: SetCallback): unknown {
          // The login this write holds, read before the store serialises it.
          const loginId = session?.[SESSION_KEY]?.login?.id;
          if (typeof loginId !== 'string' || checkedOtherwise.has(session)) return set.call(this, sessionId, session, callback);
          return set.call(this, sessionId, session, (err?: unknown) => {
            if (err) return callback?.(err);
            // The write's caller (express-session ending the response) goes on once the copy is gone, if it must go:
            // the browser's next request cannot find it.
            void checkWritten(store, sessionId, loginId).then(() => callback?.());
          });
        },
      });
    } catch {
      // A frozen or sealed store: its requests still work, without the check.
      warn(
        WarningCode.STORE_NOT_CHECKED,
        "the session store cannot be extended (it is frozen or sealed), so its writes are not checked: a session that a request still at work writes back after a logout stays logged in on routes that only use requireAuth() (it can never refresh). Give express-session a store object that is not frozen.",
      );
    }
  };
}

import { randomBytes } from 'node:crypto';
import type { Request } from 'express';
import type { Store } from 'express-session';
import type * as client from 'openid-client';
import { assertDPoPBound } from './dpop.js';
import { AuthError, AuthErrorCode } from './errors.js';
import { checkSignature } from './keys.js';
import { revokeUnused } from './revocation.js';
import type { Runtime } from './runtime.js';
import {
  afterEachSave,
  destroySession,
  destroyStoredSession,
  readState,
  regenerateSession,
  saveSession,
  writableState,
  type LoginState,
  type SessionWithState,
} from './session.js';
import { indexLogin, subjectOf, type LoginSubject, type SessionIndex } from './session-index.js';
import { checkedElsewhere } from './save-check.js';
import { storeUnavailable } from './store-errors.js';
import { loginLifetimeSeconds, newestTokens, sessionTtlSeconds } from './token-store.js';
import { sessionCopy, type StoredTokens } from './tokens.js';
import type { Transaction } from './transaction.js';
import { loadUser } from './user.js';

/** A login the callback is making: its session (rotated, not saved yet) and what the session will hold. */
export interface NewLogin {
  readonly session: SessionWithState;
  readonly login: LoginState;
  /** `Date.now()` when its code exchange was sent, which the back-channel logout marks are compared with. */
  readonly exchangedAt: number;
  /** The login the session held before, which this one replaces. */
  readonly replaced: LoginState | undefined;
  /** How long the session lives in its store once saved (seconds): its token-store key's TTL. */
  readonly ttlSeconds: number;
}

/**
 * The ID token's signature against the issuer's keys (openid-client has validated its claims), before anything of the
 * login is stored: a forged, tampered, unsigned or HMAC-signed ID token is refused (OpenID Connect Core §3.1.3.7).
 */
async function checkIdTokenSignature(runtime: Runtime, metadata: client.ServerMetadata, idToken: string): Promise<void> {
  const signature = await checkSignature(runtime.keys, metadata, idToken);
  if (signature === 'invalid') {
    throw new AuthError(AuthErrorCode.INVALID_ID_TOKEN, 400, "The ID token is invalid: its signature does not verify with the issuer's keys.");
  }
  if (signature === 'unknown') {
    throw new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, "The authorization server's signing keys could not be fetched to check the ID token; try again.");
  }
}

/**
 * Turns a token response into a login: checks what the exchange could not (DPoP binding, the ID token's signature), runs
 * `fetchUser`, rotates the session id and writes version 1 to the token store, before the session can name it (a
 * Redis failure leaves no login behind). The session is not saved yet. Rejects when the login cannot be made, and
 * `tokens` are then held by nobody.
 */
export async function createLogin(
  runtime: Runtime,
  req: Request,
  transaction: Transaction,
  metadata: client.ServerMetadata,
  response: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers,
  tokens: StoredTokens,
  exchangedAt: number,
): Promise<NewLogin> {
  const { config } = runtime;
  assertDPoPBound(config, transaction, response);
  if (response.id_token !== undefined) await checkIdTokenSignature(runtime, metadata, response.id_token);

  const idClaims = config.openid ? response.claims() : undefined;
  // Before the session changes: a failing hook leaves no half-made login.
  const user = await loadUser(runtime, tokens, transaction);
  const { tx: pending, login: replaced } = readState(req) ?? {};

  const session = await regenerateSession(req);
  const state = writableState(session);
  // Other tabs' logins belong to the same browser: they survive the id rotation.
  if (pending !== undefined && Object.keys(pending).length > 0) state.tx = pending;
  const login: LoginState = {
    id: randomBytes(16).toString('base64url'),
    ...(idClaims === undefined ? {} : { claims: { ...idClaims } }),
    ...(user === undefined ? {} : { user }),
    tokens: sessionCopy(tokens),
    ...(transaction.dpopKey === undefined ? {} : { dpopKey: transaction.dpopKey }),
  };
  const ttlSeconds = sessionTtlSeconds(req);
  await runtime.tokenStore.create(login, tokens, ttlSeconds);
  state.login = login;
  return { session, login, exchangedAt, replaced, ttlSeconds };
}

/**
 * Ends the login a new one replaced in the same browser (signing in again, perhaps as someone else): a tombstone in the
 * token store, for as long as the old session could be saved back by a request in flight, so that such a copy can never
 * be refreshed. Its tokens are revoked only when the new login is another user's (by the ID tokens' `sub`): a server
 * may put a second login of the same user on the same grant (oidc-provider does), and revoking the old refresh token
 * would end the new login with it; a login without claims may be either, so it is left alone too. When the tombstone
 * cannot be written they are still revoked, from the session's copy: the old session is gone either way. Best effort
 * and not waited for beyond the tombstone: the new login stands either way.
 */
export async function endReplacedLogin(runtime: Runtime, req: Request, configuration: client.Configuration, { login, replaced }: NewLogin): Promise<void> {
  if (replaced === undefined || replaced.id === login.id) return;
  // The old session is gone whether or not its tombstone is written: another user's tokens are held by nobody now.
  const entry = await runtime.tokenStore.end(replaced.id, sessionTtlSeconds(req)).catch(() => undefined);
  const before = subjectOf(replaced.claims).sub;
  const now = subjectOf(login.claims).sub;
  if (before === undefined || now === undefined || before === now) return;
  const tokens = newestTokens(entry, replaced);
  if (tokens !== undefined) void revokeUnused(configuration, tokens);
}

/**
 * Makes the login findable by back-channel logout and saves its session. A logout that comes meanwhile (the OP ended
 * the session while the user was landing) finds nothing to destroy yet, or destroys a session that is then written
 * back (express-session saves a regenerated session once more as the response ends: its `regenerate` leaves the new
 * session unwrapped, so the save here does not count), or cannot find it at all (it came before the index write). So a
 * back-channel logout marks the OP session or user it names before its lookup, and the session ids it ends; the marks are
 * checked after this save (the login is refused: 401 `login_required`) and again after that last one (the
 * session is destroyed). Rejects when the login must not stand; {@link abandonLogin} then clears what it left.
 */
export async function completeLogin(runtime: Runtime, req: Request, created: NewLogin): Promise<void> {
  const { session } = created;
  checkedElsewhere(session);
  const indexed = await indexLogin(runtime.sessionIndex, loginLifetimeSeconds(runtime.config, created.ttlSeconds), session);
  await saveSession(session);
  const index = runtime.sessionIndex;
  if (!indexed || index === undefined) return;
  let ended: boolean;
  try {
    ended = await index.wasEnded(session.id, loginSubjectOf(created));
  } catch (err) {
    throw storeUnavailable(err, 'Redis is unavailable; the sign-in was not completed. Try again.');
  }
  if (ended) {
    throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'The authorization server ended this sign-in (logout) while it was completing; sign in again.');
  }
  checkAfterLastSave(runtime, index, req.sessionStore, created);
}

/**
 * Checks the logout mark again once express-session's last save of the session is done, whether or not the browser
 * is still there to receive the response (a `finish` event would not come for a dropped connection). Best effort:
 * nobody is left to answer, and the response does not wait for it.
 */
function checkAfterLastSave(runtime: Runtime, index: SessionIndex, store: Store, created: NewLogin): void {
  const { session } = created;
  const sessionId = session.id;
  afterEachSave(session, async () => {
    if (await index.wasEnded(sessionId, loginSubjectOf(created))) await endLogin(runtime, created, () => destroyStoredSession(store, sessionId));
  });
}

/** The OP session and user of a new login, when its ID token was issued and its code exchange sent, for the back-channel logout marks. */
function loginSubjectOf({ login, exchangedAt }: NewLogin): LoginSubject {
  const iat = login.claims?.iat;
  return { ...subjectOf(login.claims), issuedAt: typeof iat === 'number' ? iat : undefined, exchangedAt };
}

/**
 * Ends a login for good: a tombstone in the token store (no copy of it can be refreshed, as long as a copy of its
 * session saved back could live), and its session destroyed.
 */
async function endLogin(runtime: Runtime, { login, ttlSeconds }: NewLogin, destroy: () => Promise<void>): Promise<void> {
  await Promise.allSettled([runtime.tokenStore.end(login.id, loginLifetimeSeconds(runtime.config, ttlSeconds)), destroy()]);
}

/**
 * Clears what a login that failed after {@link createLogin} left behind: its token-store version (ended, so that a
 * session save still in flight cannot bring back a login that refreshes) and its session. Best effort: the store may be
 * what failed; the caller answers with the original error either way.
 */
export async function abandonLogin(runtime: Runtime, created: NewLogin): Promise<void> {
  await endLogin(runtime, created, () => destroySession(created.session));
}

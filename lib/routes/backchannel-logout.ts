import { createHash } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Store } from 'express-session';
import { AuthError, AuthErrorCode } from '../errors.js';
import type { LogoutTokenVerifier } from '../logout-token.js';
import { reportError, setNoStore } from '../respond.js';
import { issuerKey, type Runtime } from '../runtime.js';
import { destroyStoredSession, readStoredSession, SESSION_KEY } from '../session.js';
import { storeUnavailable } from '../store-errors.js';
import type { SessionIndex } from '../session-index.js';
import { loginLifetimeSeconds, storedSessionTtlSeconds } from '../token-store.js';
import { nowSeconds } from '../tokens.js';
import { sanitisedCause } from '../upstream.js';

/** How long a delivery may be at work before a retry of the same token may start over (its process may have died). */
const IN_PROGRESS_LEASE_MS = 30_000;

/** Logout tokens are a few hundred bytes; anything much larger is not one. */
const MAX_BODY_BYTES = 16 * 1024;

function badRequest(message: string, cause?: unknown): AuthError {
  return new AuthError(AuthErrorCode.INVALID_REQUEST, 400, message, cause === undefined ? {} : { cause });
}

/**
 * The `logout_token` of a form-encoded body. Reads the body itself (apps rarely mount a form parser), or takes it
 * from `req.body` when the app's own parser already consumed the stream.
 */
async function readLogoutToken(req: Request): Promise<string> {
  if (!req.is('application/x-www-form-urlencoded')) {
    throw badRequest('The back-channel logout request must be application/x-www-form-urlencoded.');
  }
  const parsed = (req as { body?: unknown }).body;
  if ((req as { _body?: unknown })._body === true || req.readableEnded) {
    const value = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>).logout_token : undefined;
    if (typeof value !== 'string') throw badRequest('The request has no single "logout_token" parameter.');
    return value;
  }
  const declared = Number(req.get('content-length') ?? 0);
  if (declared > MAX_BODY_BYTES) throw badRequest('The request body is too large for a logout token.');
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) throw badRequest('The request body is too large for a logout token.');
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof AuthError) throw err;
    // The sender went away mid-body (ECONNRESET "aborted") or the stream failed: a bad request, not the app's error.
    throw badRequest('The request body could not be read completely.', sanitisedCause(err));
  }
  const params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  const values = params.getAll('logout_token');
  if (values.length !== 1 || values[0] === '') throw badRequest('The request must have exactly one "logout_token" parameter.');
  return values[0] as string;
}

/**
 * Ends the logins of these sessions in the token store too (a tombstone, not a deletion): their refresh tokens are
 * gone, and a copy of a session that a request in flight saves back after the logout can never be refreshed (the
 * tombstone lasts at least as long as such a copy would).
 * Every session is also marked, first: one may belong to a login whose callback has not saved it yet, or will save it
 * once more (express-session writes a regenerated session again when the response ends), after the reads or the
 * destroy below; that callback checks the mark after its saves (lib/new-login.ts). Marked before the sessions are
 * read, so that a save the reads miss is one that sees the mark.
 */
async function endLogins(runtime: Runtime, index: SessionIndex, store: Store, ids: readonly string[]): Promise<void> {
  await index.markEnded(ids);
  const sessions = await Promise.all(ids.map((id) => readStoredSession(store, id)));
  await Promise.all(
    sessions.map((session) => {
      const loginId = session?.[SESSION_KEY]?.login?.id;
      return loginId === undefined ? undefined : runtime.tokenStore.end(loginId, loginLifetimeSeconds(runtime.config, storedSessionTtlSeconds(store, session)));
    }),
  );
}

/**
 * `POST <routes.backchannelLogout>` (OpenID Connect Back-Channel Logout 1.0): validates the `logout_token`, refuses a
 * `jti` seen before, and destroys every session of its `sid`/`sub` in the shared session store, so that every process
 * refuses them on their next request. 200 on success, 400 `invalid_logout_token`/`invalid_request` otherwise, always
 * JSON and `Cache-Control: no-store` (§2.8).
 */
export function backchannelLogoutRoute(runtime: Runtime, index: SessionIndex, verify: LogoutTokenVerifier) {
  const { config } = runtime;
  return async function backchannelLogout(req: Request, res: Response, next: NextFunction): Promise<void> {
    setNoStore(res);
    try {
      const token = await readLogoutToken(req);
      const claims = await verify(token);
      // Claimed before anything is destroyed: a replayed token must not end sessions created since.
      // This route needs an `openid` scope, and so an issuer (discovered, or `server.issuer`): a jti is unique within it.
      const jtiKey = `logout-jti:${createHash('sha256').update(`${issuerKey(config)} ${claims.jti}`).digest('base64url')}`;
      const ttlMs = Math.max(1, claims.acceptableUntil - nowSeconds() + 1) * 1000;
      // Held as "in progress" for a lease only, so that a process that dies mid-way does not turn every retry into a
      // replay; finished work keeps the jti for as long as the token could be accepted.
      const claimId = await runtime.once.claim(jtiKey, Math.min(ttlMs, IN_PROGRESS_LEASE_MS));
      if (claimId === undefined) {
        if ((await runtime.once.holder(jtiKey)) === 'used') {
          throw new AuthError(AuthErrorCode.INVALID_LOGOUT_TOKEN, 400, 'The logout token is invalid: its "jti" was already used.');
        }
        // The server's retry (§2.8) overtook its first delivery, which is still at work: not a replay, and not done.
        res.set('Retry-After', '5');
        throw new AuthError(AuthErrorCode.SESSION_UNAVAILABLE, 503, 'A logout with this token is still in progress; retry later.');
      }
      let ids: string[];
      try {
        // Before the lookup: a login of this OP session or user that is not indexed yet will find the mark instead.
        await index.markLoggedOut(claims, claims.issuedAt);
        ids = await index.find(claims);
        await endLogins(runtime, index, req.sessionStore, ids);
        await Promise.all(ids.map((id) => destroyStoredSession(req.sessionStore, id)));
      } catch (err) {
        // The server retries a logout that failed (§2.8): the retry carries the same token, and must not be taken
        // for a replay while the sessions are still alive.
        await runtime.once.release(jtiKey, claimId);
        throw storeUnavailable(err, 'The session store failed; the sessions were not all ended.');
      }
      // The sessions are gone, so the logout succeeded and its jti stays used: an index entry left behind by a failure
      // here only names sessions that no longer exist.
      await runtime.once.finish(jtiKey, ttlMs);
      await index.remove(ids, claims).catch(() => undefined);
      res.status(200).end();
    } catch (err) {
      if (!(err instanceof AuthError)) {
        next(err);
        return;
      }
      reportError(config.onError, err, req);
      // The caller is the authorization server, not a browser: always JSON (§2.8), whatever it says it accepts.
      res.status(err.status).json(err.toJSON());
    }
  };
}

/** Any other method on the back-channel route. */
export function backchannelMethodNotAllowed(_req: Request, res: Response, next: NextFunction): void {
  res.set('Allow', 'POST');
  next(new AuthError(AuthErrorCode.METHOD_NOT_ALLOWED, 405, 'The back-channel logout endpoint takes POST requests from the authorization server.'));
}

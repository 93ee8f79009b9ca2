import { randomBytes } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import * as client from 'openid-client';
import { assertDPoPBound, dpopOptionsFor } from '../dpop.js';
import { AuthError, AuthErrorCode } from '../errors.js';
import { checkSignature } from '../keys.js';
import { rawQuery, strictQuery } from '../query.js';
import { setNoStore } from '../respond.js';
import type { Runtime } from '../runtime.js';
import { destroySession, destroyStoredSession, readState, regenerateSession, requireSession, saveSession, writableState, type LoginState, type SessionWithState } from '../session.js';
import { indexLogin, type SessionIndex } from '../session-index.js';
import { storeUnavailable } from '../store-errors.js';
import { backchannelEndTtl, sessionTtlSeconds } from '../token-store.js';
import { revokeUnused } from '../revocation.js';
import { sessionCopy, toStoredTokens, type StoredTokens } from '../tokens.js';
import { TRANSACTION_TTL_MS, takeTransaction, type Transaction } from '../transaction.js';
import { exchangeError } from '../upstream.js';
import { loadUser } from '../user.js';

/** Authorization-response parameters that must appear at most once. */
const CALLBACK_PARAMS = ['code', 'state', 'iss', 'error', 'error_description', 'error_uri', 'session_state'];

function invalidState(message: string): AuthError {
  return new AuthError(AuthErrorCode.INVALID_STATE, 400, message);
}

/** RFC 9207 §2.4: `iss` must equal the issuer, and must be present when the server says it sends it. */
function checkIssuer(params: URLSearchParams, metadata: client.ServerMetadata, issuerKnown: boolean): void {
  const iss = params.get('iss');
  if (iss === null) {
    if (metadata.authorization_response_iss_parameter_supported === true) {
      throw new AuthError(AuthErrorCode.INVALID_RESPONSE, 400, 'The authorization response has no "iss" parameter, which this server always sends (RFC 9207).');
    }
    return;
  }
  if (!issuerKnown) {
    // A server configured by hand without `issuer`: there is nothing to compare with, so the response cannot be trusted.
    throw new AuthError(
      AuthErrorCode.INVALID_RESPONSE,
      400,
      'The authorization server sends an "iss" parameter (RFC 9207), but no issuer is configured: set `server.issuer` to its issuer identifier.',
    );
  }
  if (iss !== metadata.issuer) {
    throw new AuthError(AuthErrorCode.INVALID_RESPONSE, 400, 'The authorization response comes from another issuer (RFC 9207 mix-up defence).');
  }
}

function authorizationResponseError(params: URLSearchParams): AuthError {
  // From the query string: kept short and printable, since the message reaches pages and onError's log lines.
  const error = (params.get('error') ?? 'unknown_error').replace(/[^\x20-\x7e]/g, '?').slice(0, 100);
  const description = params.get('error_description') ?? undefined;
  const upstream = { error, ...(description === undefined ? {} : { errorDescription: description.slice(0, 500) }) };
  if (error === 'access_denied') {
    return new AuthError(AuthErrorCode.ACCESS_DENIED, 403, 'The sign-in was cancelled or refused.', upstream);
  }
  return new AuthError(AuthErrorCode.AUTHORIZATION_ERROR, 400, `The authorization server refused the sign-in: ${error}.`, upstream);
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
 * `GET <redirectUri path>`: checks the authorization response, exchanges the code over the back channel, rotates
 * the session id and lands on the transaction's `returnTo`.
 */
export function callbackRoute(runtime: Runtime) {
  const { config } = runtime;
  // The redirect_uri sent to the token endpoint comes from configuration, never from Host or X-Forwarded-*.
  const callbackBase = `${config.redirectUri.origin}${config.redirectUri.pathname}`;

  return async function callback(req: Request, res: Response, _next: NextFunction): Promise<void> {
    setNoStore(res);
    const params = strictQuery(req, CALLBACK_PARAMS);
    requireSession(req);
    const stateValue = params.get('state');
    if (stateValue === null || stateValue === '') throw invalidState('The callback has no "state"; start the sign-in again.');

    // Single use: the transaction leaves the session before anything looks at the response.
    const transaction = takeTransaction(readState(req), stateValue);
    if (transaction === undefined) throw invalidState('The sign-in link is unknown, expired or already used; start the sign-in again.');
    if (!(await runtime.once.claim(`state:${stateValue}`, TRANSACTION_TTL_MS))) {
      throw invalidState('This sign-in response was already used; start the sign-in again.');
    }

    const configuration = await runtime.server();
    const metadata = configuration.serverMetadata();
    checkIssuer(params, metadata, config.issuer !== undefined);
    if (params.has('error')) throw authorizationResponseError(params);
    if (!params.get('code')) throw new AuthError(AuthErrorCode.INVALID_REQUEST, 400, 'The callback has no authorization "code".');

    const currentUrl = new URL(`${callbackBase}?${rawQuery(req)}`);
    const dpop = await dpopOptionsFor(runtime, transaction);
    let response: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      response = await client.authorizationCodeGrant(
        configuration,
        currentUrl,
        {
          pkceCodeVerifier: transaction.verifier,
          expectedState: stateValue,
          ...(transaction.nonce === undefined ? {} : { expectedNonce: transaction.nonce }),
          // Without it openid-client skips `auth_time` entirely: a server that ignored max_age would go unnoticed.
          ...(transaction.maxAge === undefined ? {} : { maxAge: transaction.maxAge }),
          idTokenExpected: config.openid,
        },
        undefined,
        dpop,
      );
    } catch (err) {
      throw exchangeError(err, [params.get('code') ?? undefined, transaction.verifier, transaction.nonce, config.clientSecret]);
    }
    const tokens = toStoredTokens(response);
    let session: SessionWithState;
    let login: LoginState;
    try {
      ({ session, login } = await createLogin(runtime, req, transaction, metadata, response, tokens));
    } catch (err) {
      // The server has issued these tokens and nobody will hold them: a refresh token left alive is a grant no client
      // holds (RFC 7009). Not awaited, so that a slow or failing revocation endpoint neither delays nor changes the answer.
      void revokeUnused(configuration, tokens);
      throw err;
    }
    const indexed = await indexLogin(runtime.sessionIndex, config, session);
    await saveSession(session);
    if (indexed && runtime.sessionIndex !== undefined) {
      await refuseIfLoggedOutMeanwhile(runtime, runtime.sessionIndex, session, login);
      endIfLoggedOutBeforeFinish(runtime, runtime.sessionIndex, req, res, session.id, login.id);
    }
    res.redirect(302, transaction.returnTo);
  };
}

/**
 * Turns a token response into a login: checks what the exchange could not (DPoP binding, the ID token's signature), runs
 * `fetchUser`, rotates the session id and writes version 1 to the token store, before the session can name it (a
 * Redis failure leaves no login behind). The session is not saved yet. Rejects when the login cannot be made, and
 * `tokens` are then held by nobody.
 */
async function createLogin(
  runtime: Runtime,
  req: Request,
  transaction: Transaction,
  metadata: client.ServerMetadata,
  response: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers,
  tokens: StoredTokens,
): Promise<{ session: SessionWithState; login: LoginState }> {
  const { config } = runtime;
  assertDPoPBound(config, transaction, response);
  if (response.id_token !== undefined) await checkIdTokenSignature(runtime, metadata, response.id_token);

  const idClaims = config.openid ? response.claims() : undefined;
  // Before the session changes: a failing hook leaves no half-made login.
  const user = await loadUser(runtime, tokens, transaction);
  const pending = readState(req)?.tx;

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
  await runtime.tokenStore.create(login, tokens, sessionTtlSeconds(req));
  state.login = login;
  return { session, login };
}

/**
 * A back-channel logout that found this login in the index before its session was saved could not end it (there was
 * nothing in the store to destroy yet) and marked the session id instead: the login ends here, after the save, so that
 * whichever of the two came first, the login does not outlive the logout. Fails closed when Redis cannot say.
 */
async function refuseIfLoggedOutMeanwhile(runtime: Runtime, index: SessionIndex, session: SessionWithState, login: LoginState): Promise<void> {
  let ended: boolean;
  try {
    ended = await index.wasEnded(session.id);
  } catch (err) {
    await destroySession(session).catch(() => undefined);
    throw storeUnavailable(err, 'Redis is unavailable; the sign-in was not completed. Try again.');
  }
  if (!ended) return;
  await runtime.tokenStore.end(login.id, backchannelEndTtl(runtime.config)).catch(() => undefined);
  await destroySession(session);
  throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'The authorization server ended this sign-in (logout) while it was completing; sign in again.');
}

/**
 * express-session saves a regenerated session once more as the response ends (its `regenerate` leaves the new session
 * unwrapped, so the explicit save above does not count): a back-channel logout that destroyed the session between the
 * check above and that save would see it written back. Once the response is out (that save done), the mark is checked
 * again and the session destroyed if a logout came. Best effort: there is no one left to answer.
 */
function endIfLoggedOutBeforeFinish(runtime: Runtime, index: SessionIndex, req: Request, res: Response, sessionId: string, loginId: string): void {
  const store = req.sessionStore;
  res.once('finish', () => {
    void (async () => {
      if (!(await index.wasEnded(sessionId))) return;
      await runtime.tokenStore.end(loginId, backchannelEndTtl(runtime.config));
      await destroyStoredSession(store, sessionId);
    })().catch(() => undefined);
  });
}

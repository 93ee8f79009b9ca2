import type { NextFunction, Request, Response } from 'express';
import * as client from 'openid-client';
import { dpopOptionsFor } from '../dpop.js';
import { AuthError, AuthErrorCode } from '../errors.js';
import { withIssuedTokens } from '../issued.js';
import { abandonLogin, completeLogin, createLogin, endReplacedLogin, type NewLogin } from '../new-login.js';
import { rawQuery, strictQuery } from '../query.js';
import { setNoStore } from '../respond.js';
import type { Runtime } from '../runtime.js';
import { readState, requireSession } from '../session.js';
import { revokeUnused } from '../revocation.js';
import { toStoredTokens } from '../tokens.js';
import { TRANSACTION_TTL_MS, takeTransaction } from '../transaction.js';
import { exchangeError } from '../upstream.js';

/** Authorization-response parameters that must appear at most once. */
const CALLBACK_PARAMS = ['code', 'state', 'iss', 'error', 'error_description', 'error_uri', 'session_state', 'response', 'id_token'];

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

/**
 * The login asks for `response_type=code` in the query, nothing else: a response that is a JWT (`response`, JARM) or that
 * carries an ID token (implicit or hybrid flow) is not an answer to it. openid-client refuses both as well, but its
 * messages name JWTs and flows, which read as an ID-token or token-endpoint failure (`invalid_id_token`,
 * `token_exchange_failed`) when nothing was exchanged or validated.
 */
function checkResponseShape(params: URLSearchParams): void {
  if (params.has('response')) {
    throw new AuthError(AuthErrorCode.INVALID_RESPONSE, 400, 'The authorization response is a JWT ("response", JARM), which this client does not ask for.');
  }
  if (params.has('id_token')) {
    throw new AuthError(AuthErrorCode.INVALID_RESPONSE, 400, 'The authorization response carries an ID token (implicit or hybrid flow); this client asks for a code only.');
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
    checkResponseShape(params);
    if (params.has('error')) throw authorizationResponseError(params);
    const code = params.get('code');
    if (!code) throw new AuthError(AuthErrorCode.INVALID_REQUEST, 400, 'The callback has no authorization "code".');

    const currentUrl = new URL(`${callbackBase}?${rawQuery(req)}`);
    const dpop = await dpopOptionsFor(runtime, transaction);
    let response: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    const exchangedAt = Date.now();
    try {
      // An answer refused inside the grant (its ID token's claims) still carried tokens: revoked, as below.
      response = await withIssuedTokens(
        code,
        () =>
          client.authorizationCodeGrant(
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
          ),
        (issued) => void revokeUnused(configuration, issued),
      );
    } catch (err) {
      throw exchangeError(err, [code, transaction.verifier, transaction.nonce, config.clientSecret]);
    }
    const tokens = toStoredTokens(response);
    let created: NewLogin | undefined;
    try {
      created = await createLogin(runtime, req, transaction, metadata, response, tokens, exchangedAt);
      await completeLogin(runtime, req, created);
    } catch (err) {
      if (created !== undefined) await abandonLogin(runtime, created);
      // The server has issued these tokens and nobody will hold them: a refresh token left alive is a grant no client
      // holds (RFC 7009). Not awaited, so that a slow or failing revocation endpoint neither delays nor changes the answer.
      void revokeUnused(configuration, tokens);
      throw err;
    }
    await endReplacedLogin(runtime, req, configuration, created);
    res.redirect(302, transaction.returnTo);
  };
}

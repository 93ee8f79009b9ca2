import type { NextFunction, Request, Response } from 'express';
import * as client from 'openid-client';
import { createDPoPKey } from '../dpop.js';
import { AuthError, AuthErrorCode } from '../errors.js';
import { authorizationParamsProblem, type ResolvedConfig } from '../options.js';
import { authorizationUrl } from '../par.js';
import { strictQuery } from '../query.js';
import { sanitizeReturnTo } from '../return-to.js';
import { setNoStore } from '../respond.js';
import type { Runtime } from '../runtime.js';
import { readState, requireSession, saveSession, SESSION_KEY, writableState, type OAuthSessionState } from '../session.js';
import { createTransaction } from '../transaction.js';

/** The `loginParams` option's parameters for this login, checked as `authorizationParams` are at startup. */
async function perLoginParams(config: ResolvedConfig, req: Request): Promise<Record<string, string> | undefined> {
  if (config.loginParams === undefined) return undefined;
  const params = await config.loginParams(req);
  if (params === undefined) return undefined;
  const problem = authorizationParamsProblem(params, config.openid, 'loginParams(req)');
  if (problem !== undefined) throw new AuthError(AuthErrorCode.MISCONFIGURED, 500, problem);
  return params;
}

/** `GET /login?returnTo=/path`: starts a transaction and sends the browser to the authorization endpoint. */
export function loginRoute(runtime: Runtime) {
  const { config } = runtime;
  return async function login(req: Request, res: Response, _next: NextFunction): Promise<void> {
    const params = strictQuery(req, ['returnTo']);
    const session = requireSession(req);
    const extra = await perLoginParams(config, req);
    // Discovery first: when the server is unreachable, no transaction is written to the session.
    const configuration = await runtime.server();
    // The transaction is built on a copy and only joins the session once the authorization URL exists: a failed
    // pushed authorization request leaves nothing behind.
    const existing = readState(req)?.tx;
    const draft: OAuthSessionState = existing === undefined ? {} : { tx: existing };
    const { state, transaction } = createTransaction(draft, {
      openid: config.openid,
      returnTo: sanitizeReturnTo(params.get('returnTo')),
    });
    const dpop = config.dpop ? await createDPoPKey(runtime) : undefined;
    if (dpop !== undefined) transaction.dpopKey = dpop.jwk;
    const parameters: Record<string, string> = {
      ...config.authorizationParams,
      ...extra,
      redirect_uri: config.redirectUri.href,
      scope: config.scope,
      state,
      code_challenge: await client.calculatePKCECodeChallenge(transaction.verifier),
      code_challenge_method: 'S256',
    };
    if (transaction.nonce !== undefined) parameters.nonce = transaction.nonce;
    // The callback checks `auth_time` against the max_age this request asked for (OpenID Connect Core §3.1.3.7), not
    // against whatever the configuration says by the time the browser comes back.
    if (parameters.max_age !== undefined) transaction.maxAge = Number(parameters.max_age);
    const target = await authorizationUrl(config, configuration, parameters, dpop?.handle);
    const hadState = session[SESSION_KEY] !== undefined;
    const sessionState = writableState(session);
    sessionState.tx = draft.tx;
    // The transaction must be in the store before the browser can come back with its state.
    try {
      await saveSession(session);
    } catch (err) {
      // Put back as it was: express-session counts a save as done once it is asked for, failed or not, so a new
      // session left changed would get a cookie naming a session that was never stored; and the app's error handler
      // would find a transaction whose authorization request was never sent.
      if (!hadState) delete session[SESSION_KEY];
      else if (existing === undefined) delete sessionState.tx;
      else sessionState.tx = existing;
      throw err;
    }
    setNoStore(res);
    res.redirect(302, target.href);
  };
}

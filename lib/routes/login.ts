import type { NextFunction, Request, Response } from 'express';
import * as client from 'openid-client';
import { strictQuery } from '../query.js';
import { sanitizeReturnTo } from '../return-to.js';
import { setNoStore } from '../respond.js';
import type { Runtime } from '../runtime.js';
import { requireSession, saveSession, writableState } from '../session.js';
import { createTransaction } from '../transaction.js';

/** `GET /login?returnTo=/path`: starts a transaction and sends the browser to the authorization endpoint. */
export function loginRoute(runtime: Runtime) {
  const { config } = runtime;
  return async function login(req: Request, res: Response, _next: NextFunction): Promise<void> {
    const params = strictQuery(req, ['returnTo']);
    const session = requireSession(req);
    // Discovery first: when the server is unreachable, no transaction is written to the session.
    const configuration = await runtime.server();
    const { state, transaction } = createTransaction(writableState(session), {
      openid: config.openid,
      returnTo: sanitizeReturnTo(params.get('returnTo')),
    });
    const parameters: Record<string, string> = {
      ...config.authorizationParams,
      redirect_uri: config.redirectUri.href,
      scope: config.scope,
      state,
      code_challenge: await client.calculatePKCECodeChallenge(transaction.verifier),
      code_challenge_method: 'S256',
    };
    if (transaction.nonce !== undefined) parameters.nonce = transaction.nonce;
    const target = client.buildAuthorizationUrl(configuration, parameters);
    // The transaction must be in the store before the browser can come back with its state.
    await saveSession(session);
    setNoStore(res);
    res.redirect(302, target.href);
  };
}

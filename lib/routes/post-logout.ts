import { timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { AuthError, AuthErrorCode } from '../errors.js';
import { strictQuery } from '../query.js';
import { setNoStore } from '../respond.js';
import type { Runtime } from '../runtime.js';
import { readState, requireSession } from '../session.js';
import { endSession, LOGOUT_STATE_TTL_MS } from './logout.js';

function sameString(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function invalidState(message: string): AuthError {
  return new AuthError(AuthErrorCode.INVALID_STATE, 400, message);
}

/**
 * `GET <routes.postLogout>`: the return from the server's end-session endpoint after RP-initiated logout. The
 * `state` must be the one this browser's logout sent, unused and fresh; then the placeholder session is destroyed and
 * the browser lands on `postLogoutRedirect`. Anything else is a 400 `invalid_state` page.
 */
export function postLogoutRoute(runtime: Runtime) {
  const { config } = runtime;
  return async function postLogout(req: Request, res: Response, _next: NextFunction): Promise<void> {
    setNoStore(res);
    const params = strictQuery(req, ['state']);
    const session = requireSession(req);
    const returned = params.get('state');
    const pending = readState(req)?.logout;
    if (returned === null || returned === '') throw invalidState('The logout return has no "state".');
    if (pending === undefined) throw invalidState('No logout is pending in this browser, or it was already completed.');
    // Taken out before the checks, like a login transaction: whatever happens next, this state is spent.
    delete readState(req)?.logout;
    if (!sameString(returned, pending.state)) throw invalidState('The logout return does not belong to the logout this browser started.');
    if (Date.now() - pending.createdAt > LOGOUT_STATE_TTL_MS) throw invalidState('The logout took too long; the return was refused.');
    if (!(await runtime.once.claim(`logout-state:${pending.state}`, LOGOUT_STATE_TTL_MS))) {
      throw invalidState('This logout return was already used.');
    }
    await endSession(res, config, session);
    res.redirect(303, config.postLogoutRedirect);
  };
}

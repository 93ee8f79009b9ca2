import { AuthError, AuthErrorCode } from './errors.js';
import { sanitisedCause } from './upstream.js';

/**
 * A failure of Redis or of the session store: fail closed with 503 `session_unavailable`. The cause is a sanitised
 * copy, because ioredis attaches the failed command's arguments (session data, token sets) to its errors.
 */
export function storeUnavailable(err: unknown, message = 'Redis is unavailable; try again.'): AuthError {
  return new AuthError(AuthErrorCode.SESSION_UNAVAILABLE, 503, message, { cause: sanitisedCause(err) });
}

import { AuthError, AuthErrorCode } from './errors.js';
import { fetchResource, type ResourceCredentials } from './resource.js';
import type { Runtime } from './runtime.js';
import { publicTokens, type StoredTokens } from './tokens.js';
import { sanitisedCause } from './upstream.js';

function failed(message: string, cause?: unknown): AuthError {
  return new AuthError(AuthErrorCode.USER_FETCH_FAILED, 502, message, cause === undefined ? {} : { cause });
}

/**
 * Runs the `fetchUser` hook for a login that is about to be stored. Its result goes into the session, so it must be a
 * plain JSON object; it is copied through JSON now so that a value the store cannot keep fails here, not at save time.
 */
export async function loadUser(
  runtime: Runtime,
  tokens: StoredTokens,
  binding: Pick<ResourceCredentials, 'dpopKey'>,
): Promise<Record<string, unknown> | undefined> {
  const hook = runtime.config.fetchUser;
  if (hook === undefined) return undefined;
  const credentials: ResourceCredentials = { accessToken: tokens.accessToken, tokenType: tokens.tokenType, dpopKey: binding.dpopKey };
  let user: unknown;
  try {
    user = await hook(publicTokens(tokens), { fetch: (url, init) => fetchResource(runtime, credentials, url, init) });
  } catch (err) {
    // The hook's own message may quote a response: only a sanitised copy is kept, as the cause (never in toJSON()).
    throw failed('fetchUser failed, so the login was not completed; try again.', sanitisedCause(err, [tokens.accessToken, tokens.refreshToken, tokens.idToken]));
  }
  if (typeof user !== 'object' || user === null || Array.isArray(user)) {
    throw failed('fetchUser must resolve to a plain object describing the user.');
  }
  let copy: unknown;
  try {
    copy = JSON.parse(JSON.stringify(user));
  } catch (err) {
    throw failed('fetchUser returned an object that cannot be stored in the session (it must be JSON-serialisable).', sanitisedCause(err));
  }
  return copy as Record<string, unknown>;
}

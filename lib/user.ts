import { AuthError, AuthErrorCode } from './errors.js';
import { fetchResource, resourceRequest, type ResourceCredentials } from './resource.js';
import type { Runtime } from './runtime.js';
import { publicTokens, type StoredTokens } from './tokens.js';
import { sanitisedCause } from './upstream.js';

function failed(message: string, cause?: unknown): AuthError {
  return new AuthError(AuthErrorCode.USER_FETCH_FAILED, 502, message, cause === undefined ? {} : { cause });
}

/**
 * An object made by `{…}`, `JSON.parse` or `Object.create(null)`: a Response (a hook that forgot `.json()`), a Map, a
 * Date or a class instance is not, although each would pass through JSON as something (`{}`, a string). The prototype
 * is compared by shape, not with this realm's `Object.prototype`: `Response.json()` builds its result in Node's own
 * realm, which is not the one of a vm context (jest's).
 */
function isJsonObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === null || Object.getPrototypeOf(prototype) === null;
}

/**
 * Runs the `fetchUser` hook for a login that is about to be stored. Its result goes into the session, so it must be a
 * plain JSON object, before and after a copy through JSON (a `toJSON()` may turn it into a string): the copy is made
 * now so that a value the store cannot keep fails here, not at save time.
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
    user = await hook(publicTokens(tokens), {
      fetch: async (url, init) => fetchResource(runtime, credentials, resourceRequest(url, init, { allowInsecureRequests: runtime.config.allowInsecureRequests, secrets: [tokens.accessToken] }), init),
    });
  } catch (err) {
    // The hook's own message may quote a response: only a sanitised copy is kept, as the cause (never in toJSON()).
    throw failed('fetchUser failed, so the login was not completed; try again.', sanitisedCause(err, [tokens.accessToken, tokens.refreshToken, tokens.idToken]));
  }
  const notPlain = 'fetchUser must resolve to a plain object describing the user (not a Response: call .json() on it; not a Map, a Date or a class instance).';
  if (!isJsonObject(user)) throw failed(notPlain);
  let copy: unknown;
  try {
    copy = JSON.parse(JSON.stringify(user));
  } catch (err) {
    throw failed('fetchUser returned an object that cannot be stored in the session (it must be JSON-serialisable).', sanitisedCause(err));
  }
  if (!isJsonObject(copy)) throw failed(notPlain);
  return copy;
}

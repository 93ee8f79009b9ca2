import * as client from 'openid-client';
import { dpopOptionsFor, type DPoPBound, type DPoPServices } from './dpop.js';
import { AuthError, AuthErrorCode } from './errors.js';
import { describe, isNetworkError, isTimeout, sanitisedCause } from './upstream.js';

/**
 * The request of `req.auth.fetch()`. No streams: when a resource server asks for a new DPoP nonce, the request is sent
 * a second time, body included.
 *
 * @example
 * ```ts
 * await req.auth.fetch('https://api.example.com/orders', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(order) });
 * ```
 */
export interface ResourceRequestInit {
  /** @default `'GET'` */
  method?: string;
  /** Extra headers. `Authorization` and `DPoP` are set by the library and may not be given. */
  headers?: HeadersInit;
  body?: string | URLSearchParams | Uint8Array | ArrayBuffer | null;
}

/**
 * `fetch` with the login's access token: `(url, init?) => Promise<Response>`, as given to `fetchUser`.
 *
 * @example
 * ```ts
 * fetchUser: async (tokens, { fetch }) => (await fetch('https://api.github.com/user')).json()
 * ```
 */
export type ResourceFetch = (url: string | URL, init?: ResourceRequestInit) => Promise<Response>;

/** The access token to send, and how it is bound. */
export interface ResourceCredentials extends DPoPBound {
  readonly accessToken: string;
  readonly tokenType: string;
}

function misuse(message: string, cause?: unknown): AuthError {
  return new AuthError(AuthErrorCode.MISCONFIGURED, 500, message, cause === undefined ? {} : { cause });
}

/**
 * Calls a resource server with the access token in the `Authorization` header (RFC 6750 §2.1): `DPoP <token>` plus a
 * fresh proof for a DPoP-bound token (RFC 9449 §7), else `Bearer <token>`. A `use_dpop_nonce` challenge is retried
 * once with the server's nonce (openid-client); any other answer, 401 included, is returned to the caller as is.
 */
export async function fetchResource(
  runtime: DPoPServices,
  credentials: ResourceCredentials,
  url: string | URL,
  init: ResourceRequestInit = {},
): Promise<Response> {
  let target: URL;
  try {
    target = new URL(url);
  } catch (err) {
    throw misuse('req.auth.fetch() needs an absolute URL.', err);
  }
  const headers = new Headers(init.headers);
  if (headers.has('authorization') || headers.has('dpop')) {
    throw misuse('req.auth.fetch() sets the Authorization and DPoP headers itself; do not pass them.');
  }
  const bound = credentials.tokenType === 'DPoP';
  const options = bound ? await dpopOptionsFor(runtime, credentials) : undefined;
  if (bound && options === undefined) {
    throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'The access token is DPoP-bound but the login has no DPoP key; log in again.');
  }
  const configuration = await runtime.server();
  try {
    return await client.fetchProtectedResource(
      configuration,
      credentials.accessToken,
      target,
      (init.method ?? 'GET').toUpperCase(),
      init.body ?? undefined,
      headers,
      options,
    );
  } catch (err) {
    // openid-client throws on any WWW-Authenticate challenge; the app decides what a 401 means (refresh, log in again).
    if (err instanceof client.WWWAuthenticateChallengeError) return err.response;
    const cause = sanitisedCause(err, [credentials.accessToken]);
    if (isTimeout(err)) throw new AuthError(AuthErrorCode.RESOURCE_REQUEST_FAILED, 504, 'The resource server did not answer in time.', { cause });
    if (isNetworkError(err)) throw new AuthError(AuthErrorCode.RESOURCE_REQUEST_FAILED, 502, 'The resource server could not be reached.', { cause });
    if ((err as { code?: unknown } | null)?.code === 'OAUTH_HTTP_REQUEST_FORBIDDEN') {
      throw misuse('req.auth.fetch() sends tokens over https: only (allowInsecureRequests is off).', cause);
    }
    throw new AuthError(AuthErrorCode.RESOURCE_REQUEST_FAILED, 502, `The resource request failed: ${describe(cause)}.`, { cause });
  }
}

import * as client from 'openid-client';
import { dpopOptionsFor, type DPoPBound, type DPoPServices } from './dpop.js';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ResolvedConfig } from './options.js';
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
  /**
   * Aborts the request, and the reading of its body, as `fetch`'s `signal` does: the call or the body read rejects
   * with the signal's reason. `httpTimeout` only bounds the wait for the response headers; this is how the app bounds
   * the rest, e.g. `AbortSignal.timeout(30_000)`.
   */
  signal?: AbortSignal | null;
}

/**
 * `fetch` with the login's access token: `(url, init?) => Promise<Response>`, as given to `fetchUser`. `httpTimeout`
 * bounds the wait for the response headers; reading the body is the caller's to bound.
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
 * A fetch whose timeout covers the wait for the response headers only. openid-client would attach
 * `AbortSignal.timeout(httpTimeout)` to the request, and that signal stays attached to the returned Response: a body
 * still coming when it fires is cut off with a bare `TimeoutError`, which no AuthError wraps, since the body is read
 * by the app long after `req.auth.fetch()` resolved (a download, a stream, a slow API). Reading the body is the app's
 * to bound, with a `signal` of its own, which stays attached to the response as fetch's does.
 */
function headersWithin(milliseconds: number, own: AbortSignal | undefined): client.CustomFetch {
  return async (url, options) => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new DOMException('No response headers within httpTimeout.', 'TimeoutError')), milliseconds);
    try {
      const signal = own === undefined ? controller.signal : AbortSignal.any([controller.signal, own]);
      // openid-client types the body with Uint8Array<ArrayBufferLike>, the DOM lib's BodyInit wants ArrayBuffer-backed views: the same values at run time.
      return await fetch(url, { ...options, body: options.body as BodyInit | null, signal });
    } finally {
      clearTimeout(timer);
    }
  };
}

/** The resource requests' view of each discovered configuration (see {@link resourceView}), made once. */
const resourceConfigurations = new WeakMap<client.Configuration, client.Configuration>();

/**
 * The resource requests' own view of the server configuration: the same metadata and TLS rule, no client
 * authentication (a resource request carries none) and, instead of openid-client's whole-request timeout (in whole
 * seconds), {@link headersWithin} the configured milliseconds.
 */
function resourceView(runtime: ResourceServices, configuration: client.Configuration, own: AbortSignal | undefined): client.Configuration {
  const resource = new client.Configuration(configuration.serverMetadata(), configuration.clientMetadata().client_id, undefined, client.None());
  if (runtime.config.allowInsecureRequests) client.allowInsecureRequests(resource);
  // 0: openid-client sends no signal of its own; the custom fetch times the headers.
  resource.timeout = 0;
  resource[client.customFetch] = headersWithin(runtime.config.httpTimeout, own);
  return resource;
}

function resourceConfiguration(runtime: ResourceServices, configuration: client.Configuration, own: AbortSignal | undefined): client.Configuration {
  // openid-client hands the fetch no per-call options, so a request with a signal of its own needs a view of its own.
  if (own !== undefined) return resourceView(runtime, configuration, own);
  let resource = resourceConfigurations.get(configuration);
  if (resource === undefined) {
    resource = resourceView(runtime, configuration, undefined);
    resourceConfigurations.set(configuration, resource);
  }
  return resource;
}

/** What a resource request needs from the runtime. */
export type ResourceServices = DPoPServices & { readonly config: Pick<ResolvedConfig, 'allowInsecureRequests' | 'httpTimeout'> };

const BODILESS_METHODS = new Set(['GET', 'HEAD']);

/**
 * Refuses, before anything is sent, a request the Fetch API would refuse: those are the app's programming errors
 * (`misconfigured`), not the resource server's failures. The Fetch API's own messages are not used: they quote the URL
 * (credentials included) and invalid header values.
 */
function checkRequest(target: URL, method: string, { headers, body, signal }: ResourceRequestInit): Headers {
  if (target.username !== '' || target.password !== '') {
    throw misuse('req.auth.fetch() refuses a URL with credentials in it (user:password@): the access token is the credential it sends.');
  }
  let checked: Headers;
  try {
    checked = new Headers(headers);
  } catch {
    throw misuse('req.auth.fetch() was given a header with an invalid name or value.');
  }
  if (checked.has('authorization') || checked.has('dpop')) {
    throw misuse('req.auth.fetch() sets the Authorization and DPoP headers itself; do not pass them.');
  }
  if (BODILESS_METHODS.has(method) && body !== undefined && body !== null) {
    throw misuse(`req.auth.fetch() was given a body for a ${method} request, which cannot have one.`);
  }
  try {
    new Request(target, { method, body: (body ?? null) as BodyInit | null, signal: signal ?? null });
  } catch {
    throw misuse(
      'req.auth.fetch() was given a method, body or signal that fetch refuses: an invalid method, a forbidden one (CONNECT, TRACE, TRACK), a stream body, or a signal that is no AbortSignal.',
    );
  }
  return checked;
}

/** A resource request that {@link resourceRequest} found well-formed. */
export interface ResourceRequest {
  readonly target: URL;
  readonly method: string;
  readonly headers: Headers;
}

/**
 * Checks a resource request before anything is done for it (a refresh included): a mistake of the app's is
 * `misconfigured` (500), whatever the state of its tokens. `secrets` are redacted from a URL parse error's cause.
 */
export function resourceRequest(
  url: string | URL,
  init: ResourceRequestInit = {},
  { allowInsecureRequests, secrets }: { allowInsecureRequests: boolean; secrets: ReadonlyArray<string | undefined> },
): ResourceRequest {
  let target: URL;
  try {
    target = new URL(url);
  } catch (err) {
    throw misuse('req.auth.fetch() needs an absolute URL.', sanitisedCause(err, secrets));
  }
  // Checked here with the app's other mistakes, not left to openid-client, which refuses them only when sending: after a
  // refresh the request may have needed.
  if (target.protocol === 'http:' && !allowInsecureRequests) throw misuse('req.auth.fetch() sends tokens over https: only (allowInsecureRequests is off).');
  if (target.protocol !== 'https:' && target.protocol !== 'http:') throw misuse('req.auth.fetch() sends requests over https: (or http:) only.');
  // From JavaScript (or past a cast) anything may come: a TypeError from reading it would be no AuthError at all.
  if (typeof init !== 'object' || init === null) throw misuse('req.auth.fetch() takes its options as an object, or none.');
  if (init.method !== undefined && typeof init.method !== 'string') throw misuse('req.auth.fetch() was given a method that is not a string.');
  const method = (init.method ?? 'GET').toUpperCase();
  return { target, method, headers: checkRequest(target, method, init) };
}

/**
 * Calls a resource server with the access token in the `Authorization` header (RFC 6750 §2.1): `DPoP <token>` plus a
 * fresh proof for a DPoP-bound token (RFC 9449 §7), else `Bearer <token>`. A `use_dpop_nonce` challenge is retried
 * once with the server's nonce (openid-client); any other answer, 401 included, is returned to the caller as is.
 *
 * `httpTimeout` bounds the wait for the response headers (504 `resource_request_failed` when they do not come); the
 * body is the caller's to read, at its own pace, bounded by its own `init.signal` (whose abort rejects with its reason,
 * as fetch does). A request fetch would refuse (credentials in the URL, a body on GET, an invalid header…) is
 * `misconfigured`, with a message that quotes neither URL nor header.
 */
export async function fetchResource(
  runtime: ResourceServices,
  credentials: ResourceCredentials,
  request: ResourceRequest,
  init: ResourceRequestInit = {},
): Promise<Response> {
  const { target, method, headers } = request;
  const bound = credentials.tokenType === 'DPoP';
  const options = bound ? await dpopOptionsFor(runtime, credentials) : undefined;
  if (bound && options === undefined) {
    throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, 'The access token is DPoP-bound but the login has no DPoP key; log in again.');
  }
  const configuration = resourceConfiguration(runtime, await runtime.server(), init.signal ?? undefined);
  try {
    return await client.fetchProtectedResource(configuration, credentials.accessToken, target, method, init.body ?? undefined, headers, options);
  } catch (err) {
    // openid-client throws on any WWW-Authenticate challenge; the app decides what a 401 means (refresh, log in again).
    if (err instanceof client.WWWAuthenticateChallengeError) return err.response;
    // The app's own abort is not a failure to report: it gets its reason back, as from fetch.
    if (init.signal?.aborted) throw init.signal.reason;
    const cause = sanitisedCause(err, [credentials.accessToken]);
    if (isTimeout(err)) throw new AuthError(AuthErrorCode.RESOURCE_REQUEST_FAILED, 504, 'The resource server did not answer in time.', { cause });
    if (isNetworkError(err)) throw new AuthError(AuthErrorCode.RESOURCE_REQUEST_FAILED, 502, 'The resource server could not be reached.', { cause });
    throw new AuthError(AuthErrorCode.RESOURCE_REQUEST_FAILED, 502, `The resource request failed: ${describe(cause)}.`, { cause });
  }
}

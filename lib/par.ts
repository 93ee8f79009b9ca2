import * as client from 'openid-client';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ResolvedConfig } from './options.js';
import { describe, isNetworkError, isTimeout, isTransient, redactor, sanitisedCause, transientStatus } from './upstream.js';

/** PAR (RFC 9126) is used when the app asks for it, and always when the server requires it (RFC 9126 §5). */
export function usesPushedAuthorization(config: ResolvedConfig, metadata: client.ServerMetadata): boolean {
  return config.pushedAuthorizationRequests || metadata.require_pushed_authorization_requests === true;
}

/** oauth4webapi's refusals of an endpoint in the metadata: missing, not a URL, not https: (or http:). */
const UNUSABLE_ENDPOINT_CODES = new Set([
  'OAUTH_MISSING_SERVER_METADATA',
  'OAUTH_INVALID_SERVER_METADATA',
  'OAUTH_HTTP_REQUEST_FORBIDDEN',
  'OAUTH_REQUEST_PROTOCOL_FORBIDDEN',
]);

/**
 * An endpoint the metadata names but openid-client cannot use, as `discovery_failed`. Discovery checks them first
 * (server.ts); this keeps a throw that gets past it an answer, not a stack trace.
 */
function unusableEndpoint(err: unknown): AuthError | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !UNUSABLE_ENDPOINT_CODES.has(code)) return undefined;
  return new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, `The authorization server metadata cannot be used to start a login: ${describe(err)}.`, {
    cause: sanitisedCause(err),
  });
}

/**
 * `secrets` are what the pushed request carried that must not be shown (the client secret with `client_secret_post`,
 * the nonce): redacted from whatever the server echoed, as at the token endpoint.
 */
function parError(err: unknown, secrets: ReadonlyArray<string | undefined>): AuthError {
  const endpoint = unusableEndpoint(err);
  if (endpoint !== undefined) return endpoint;
  const cause = sanitisedCause(err, secrets);
  const redact = redactor(secrets);
  if (isTimeout(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 504, 'The pushed authorization request endpoint did not answer in time.', { cause });
  }
  if (isNetworkError(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, 'The pushed authorization request endpoint could not be reached.', { cause });
  }
  // The same rule as at the token endpoint: a 5xx or a 429 says nothing about the request, so it is the server's
  // (idp_unreachable, retry later), whether or not it came with an OAuth error body.
  if (err instanceof client.ResponseBodyError) {
    const error = redact(err.error);
    const upstream = { cause, error, ...(err.error_description ? { errorDescription: redact(err.error_description) } : {}) };
    if (isTransient(err.status)) {
      return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, `The pushed authorization request endpoint failed (HTTP ${err.status}).`, upstream);
    }
    return new AuthError(AuthErrorCode.PAR_FAILED, 502, `The authorization server refused the pushed authorization request: ${error}.`, upstream);
  }
  const status = transientStatus(err);
  if (status !== undefined) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, `The pushed authorization request endpoint failed (HTTP ${status}).`, { cause });
  }
  return new AuthError(AuthErrorCode.PAR_FAILED, 502, `The pushed authorization request failed: ${redact(describe(err))}.`, { cause });
}

/**
 * The URL to send the browser to. With PAR the parameters go over the back channel (with a DPoP proof, which binds the
 * code to the key, RFC 9449 §10.1) and the URL only carries `client_id` and `request_uri`; without PAR, `dpop_jkt`
 * binds the code instead (RFC 9449 §10).
 */
export async function authorizationUrl(
  config: ResolvedConfig,
  configuration: client.Configuration,
  parameters: Record<string, string>,
  dpop: client.DPoPHandle | undefined,
): Promise<URL> {
  if (!usesPushedAuthorization(config, configuration.serverMetadata())) {
    if (dpop !== undefined) parameters.dpop_jkt = await dpop.calculateThumbprint();
    try {
      return client.buildAuthorizationUrl(configuration, parameters);
    } catch (err) {
      throw unusableEndpoint(err) ?? err;
    }
  }
  try {
    return await client.buildAuthorizationUrlWithPAR(configuration, parameters, dpop === undefined ? undefined : { DPoP: dpop });
  } catch (err) {
    throw parError(err, [config.clientSecret, parameters.nonce]);
  }
}

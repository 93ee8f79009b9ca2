import type * as client from 'openid-client';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ResolvedConfig } from './options.js';
import { usesPushedAuthorization } from './par.js';

/** The metadata endpoints every login depends on (the others have a fallback of their own). */
type Endpoint = 'authorization_endpoint' | 'token_endpoint' | 'jwks_uri' | 'pushed_authorization_request_endpoint';

/** What each endpoint the library uses is for, to say in a refusal what cannot work without it. */
function endpointUse(field: Endpoint, config: ResolvedConfig): string {
  switch (field) {
    case 'authorization_endpoint':
      return 'browsers are sent there to log in';
    case 'token_endpoint':
      return 'authorization codes are redeemed there';
    case 'jwks_uri':
      return "ID-token signatures are verified with its keys ('openid' is in scope)";
    case 'pushed_authorization_request_endpoint':
      return config.pushedAuthorizationRequests
        ? 'pushedAuthorizationRequests is on, and pushed authorization requests go there'
        : 'the server requires pushed authorization requests, which go there';
  }
}

/** Why the metadata's `field` cannot be used, as `discovery_failed`, or undefined when it can. */
export function endpointRefusal(field: Endpoint, value: unknown, config: ResolvedConfig): AuthError | undefined {
  const problem = endpointProblem(value, config.allowInsecureRequests);
  if (problem === undefined) return undefined;
  return new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, `The authorization server metadata's ${field} ${problem}; ${endpointUse(field, config)}.`);
}

/** Why an endpoint's value cannot be used, or undefined when it can. */
function endpointProblem(value: unknown, allowInsecureRequests: boolean): string | undefined {
  if (value === undefined) return 'is missing';
  if (typeof value !== 'string' || !URL.canParse(value)) return 'is not a URL';
  const { protocol } = new URL(value);
  if (protocol === 'https:' || (protocol === 'http:' && allowInsecureRequests)) return undefined;
  return protocol === 'http:' ? 'uses http: (allowInsecureRequests, for development only, would allow it)' : 'is not an https: URL';
}

/**
 * Refuses, once per discovery, metadata whose endpoints the library will use but cannot: missing, not URLs, or not
 * https: (without `allowInsecureRequests`). Found later, each would fail a login half-way, as a stack trace rather
 * than an answer: openid-client checks the authorization endpoint only when it builds a login URL, and the key set's
 * only at the callback, after the code has been redeemed. Optional endpoints with a fallback of their own
 * (revocation, end session) are left to their callers. Values are not quoted: the field's name says where to look.
 */
export function checkEndpoints(config: ResolvedConfig, metadata: client.ServerMetadata): void {
  const used: Endpoint[] = ['authorization_endpoint', 'token_endpoint'];
  if (config.openid) used.push('jwks_uri');
  if (usesPushedAuthorization(config, metadata)) used.push('pushed_authorization_request_endpoint');
  for (const field of used) {
    const refusal = endpointRefusal(field, metadata[field], config);
    if (refusal !== undefined) throw refusal;
  }
}

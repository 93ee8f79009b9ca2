import * as client from 'openid-client';
import { checkClientAuthSupport, clientAuthentication } from './client-auth.js';
import { checkDPoPSupport } from './dpop.js';
import { checkEndpoints } from './endpoints.js';
import { AuthError, AuthErrorCode } from './errors.js';
import { recordingFetch } from './issued.js';
import type { ResolvedConfig, ResolvedServer } from './options.js';
import { MAX_ANSWER_BYTES, serverFetch } from './transport.js';
import { isAnswerTooLarge, isNetworkError, isTimeout } from './upstream.js';

/** Resolves the openid-client `Configuration` once and shares it; a failure is not cached. */
export type ServerResolver = () => Promise<client.Configuration>;

/**
 * Refuses metadata that would silently weaken the flow. Each check names the fix, because the person who reads it
 * is configuring the app, not using it.
 */
function checkMetadata(config: ResolvedConfig, metadata: client.ServerMetadata): void {
  const pkceMethods = metadata.code_challenge_methods_supported;
  // Absent means "not advertised", which many PKCE-capable servers do; present without S256 is a real downgrade.
  if (Array.isArray(pkceMethods) && !pkceMethods.includes('S256')) {
    throw new AuthError(
      AuthErrorCode.DISCOVERY_FAILED,
      502,
      `The authorization server does not support PKCE S256 (code_challenge_methods_supported: ${pkceMethods.join(', ') || 'none'}); this library never falls back to "plain".`,
    );
  }
  checkClientAuthSupport(config, metadata);
  const responseTypes = metadata.response_types_supported;
  if (Array.isArray(responseTypes) && !responseTypes.includes('code')) {
    throw new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, 'The authorization server does not support response_type=code.');
  }
}

/**
 * Metadata for a server configured by hand. Without an issuer identifier the token endpoint stands in: openid-client
 * needs one, and it is what `private_key_jwt` then uses as audience (RFC 7523 §3 allows it).
 */
function handGivenMetadata(server: ResolvedServer): client.ServerMetadata {
  const optional = {
    revocation_endpoint: server.revocationEndpoint,
    userinfo_endpoint: server.userinfoEndpoint,
    jwks_uri: server.jwksUri,
    end_session_endpoint: server.endSessionEndpoint,
    pushed_authorization_request_endpoint: server.pushedAuthorizationRequestEndpoint,
  };
  return {
    issuer: server.issuerIdentifier ?? server.tokenEndpoint.href,
    authorization_endpoint: server.authorizationEndpoint.href,
    token_endpoint: server.tokenEndpoint.href,
    ...Object.fromEntries(Object.entries(optional).flatMap(([name, url]) => (url === undefined ? [] : [[name, url.href]]))),
  };
}

/**
 * The metadata document URL openid-client fetches for `issuer` (oauth4webapi's `appendWellKnown`/`prependWellKnown`),
 * named in discovery errors. Public: the issuer is, and it never carries credentials (refused at startup).
 */
function discoveryUrl(issuer: URL, algorithm: 'oidc' | 'oauth2'): string {
  const url = new URL(issuer.href);
  const once = (path: string) => path.replace('//', '/');
  if (algorithm === 'oidc') url.pathname = once(`${url.pathname}/.well-known/openid-configuration`);
  else url.pathname = url.pathname === '/' ? '/.well-known/oauth-authorization-server' : once(`/.well-known/oauth-authorization-server/${url.pathname.replace(/\/$/, '')}`);
  return url.href;
}

/** A value from the server's metadata, quoted for a message: a string, cut short. */
function quoted(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
  return `'${text.length > 200 ? `${text.slice(0, 200)}…` : text}'`;
}

/**
 * The issuer mismatch, with both values. openid-client compares them as URL hrefs: a bare origin's trailing '/' does
 * not count (`new URL` adds it to both), but with a path it does, so 'https://idp/realms/app/' is not
 * 'https://idp/realms/app'. That case gets said outright, since the two look alike.
 */
function issuerMismatch(config: ResolvedConfig, err: unknown): string {
  const configured = config.issuer?.href ?? '';
  const named = ((err as { cause?: { body?: { issuer?: unknown } } }).cause?.body ?? {}).issuer;
  const slash =
    typeof named === 'string' && named !== configured && named.replace(/\/$/, '') === configured.replace(/\/$/, '')
      ? ` They differ only by a trailing '/', which counts for an issuer with a path: set \`issuer\` to ${quoted(named)}, exactly as the metadata writes it.`
      : '';
  return `: the metadata names another issuer (${quoted(named)}) than the configured one (${quoted(configured)}).${slash}`;
}

function discoveryError(config: ResolvedConfig, err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  const at = config.server === undefined && config.issuer !== undefined ? ` (${discoveryUrl(config.issuer, config.discovery)})` : '';
  if (isTimeout(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 504, `The authorization server did not answer discovery${at} in time.`, { cause: err });
  }
  if (isAnswerTooLarge(err)) {
    // Not a metadata document (those are kilobytes): most likely `issuer` names some other resource.
    return new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, `The authorization server metadata${at} is larger than ${MAX_ANSWER_BYTES / 1024 / 1024} MiB and was not read: check that \`issuer\` names the authorization server.`, { cause: err });
  }
  if (isNetworkError(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, `The authorization server could not be reached for discovery${at}.`, { cause: err });
  }
  const code = (err as { code?: unknown } | null)?.code;
  const detail = code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED' ? issuerMismatch(config, err) : '.';
  return new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, `The authorization server metadata${at} could not be used${detail}`, { cause: err });
}

/**
 * Creates the lazy resolver. Discovery runs on first use; concurrent first requests share one fetch, and a failed
 * fetch is forgotten so that the next request tries again (a provider that was briefly down must not need a restart).
 */
export function createServerResolver(config: ResolvedConfig): ServerResolver {
  let pending: Promise<client.Configuration> | undefined;
  const timeoutSeconds = Math.max(1, Math.ceil(config.httpTimeout / 1000));

  async function discover(): Promise<client.Configuration> {
    try {
      const clientMetadata: Partial<client.ClientMetadata> = {
        redirect_uris: [config.redirectUri.href],
        response_types: ['code'],
        [client.clockTolerance]: config.clockTolerance,
      };
      const clientAuth = await clientAuthentication(config);
      let configuration: client.Configuration;
      if (config.server !== undefined) {
        configuration = new client.Configuration(handGivenMetadata(config.server), config.clientId, clientMetadata, clientAuth);
        if (config.allowInsecureRequests) client.allowInsecureRequests(configuration);
      } else {
        if (config.issuer === undefined) throw new AuthError(AuthErrorCode.MISCONFIGURED, 500, 'Neither issuer nor server is configured.');
        configuration = await client.discovery(config.issuer, config.clientId, clientMetadata, clientAuth, {
          algorithm: config.discovery,
          timeout: timeoutSeconds,
          execute: config.allowInsecureRequests ? [client.allowInsecureRequests] : [],
          [client.customFetch]: serverFetch,
        });
        checkMetadata(config, configuration.serverMetadata());
      }
      checkEndpoints(config, configuration.serverMetadata());
      checkDPoPSupport(config, configuration.serverMetadata());
      // openid-client trusts a token-endpoint ID token on TLS alone (OIDC Core §3.1.3.7 step 6 allows it) and validates
      // its claims; the signature is checked by the library itself (keys.ts), at login and at refresh. Not with
      // openid-client's own check: that one runs inside the grant, after the server has rotated a refresh token, so a
      // key-set outage would throw the new tokens away.
      configuration.timeout = timeoutSeconds;
      configuration[client.customFetch] = recordingFetch;
      return configuration;
    } catch (err) {
      throw discoveryError(config, err);
    }
  }

  return function resolveServer() {
    pending ??= discover().catch((err: unknown) => {
      pending = undefined;
      throw err;
    });
    return pending;
  };
}

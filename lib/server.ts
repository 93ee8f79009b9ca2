import * as client from 'openid-client';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ClientAuthMethod, ResolvedConfig } from './options.js';
import { isNetworkError, isTimeout } from './upstream.js';

/** Resolves the openid-client `Configuration` once and shares it; a failure is not cached. */
export type ServerResolver = () => Promise<client.Configuration>;

function clientAuthentication(method: ClientAuthMethod, secret: string | undefined): client.ClientAuth {
  switch (method) {
    case 'client_secret_basic':
      return client.ClientSecretBasic(secret);
    case 'client_secret_post':
      return client.ClientSecretPost(secret);
    case 'none':
      return client.None();
  }
}

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
  const authMethods = metadata.token_endpoint_auth_methods_supported;
  // RFC 8414 §2: absent means client_secret_basic only.
  const supported = Array.isArray(authMethods) ? authMethods : ['client_secret_basic'];
  if (config.clientAuthMethod !== 'none' && !supported.includes(config.clientAuthMethod)) {
    throw new AuthError(
      AuthErrorCode.DISCOVERY_FAILED,
      502,
      `The authorization server does not support clientAuthMethod '${config.clientAuthMethod}'; it supports: ${supported.join(', ')}.`,
    );
  }
  const responseTypes = metadata.response_types_supported;
  if (Array.isArray(responseTypes) && !responseTypes.includes('code')) {
    throw new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, 'The authorization server does not support response_type=code.');
  }
}

function discoveryError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (isTimeout(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 504, 'The authorization server did not answer discovery in time.', { cause: err });
  }
  if (isNetworkError(err)) {
    return new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, 'The authorization server could not be reached for discovery.', { cause: err });
  }
  const code = (err as { code?: unknown } | null)?.code;
  const detail = code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED' ? ': the metadata names another issuer than the configured one' : '';
  return new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, `The authorization server metadata could not be used${detail}.`, { cause: err });
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
      const configuration = await client.discovery(
        config.issuer,
        config.clientId,
        {
          redirect_uris: [config.redirectUri.href],
          response_types: ['code'],
          [client.clockTolerance]: config.clockTolerance,
        },
        clientAuthentication(config.clientAuthMethod, config.clientSecret),
        {
          timeout: timeoutSeconds,
          execute: config.allowInsecureRequests ? [client.allowInsecureRequests] : [],
        },
      );
      checkMetadata(config, configuration.serverMetadata());
      configuration.timeout = timeoutSeconds;
      return configuration;
    } catch (err) {
      throw discoveryError(err);
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

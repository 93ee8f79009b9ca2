import { importJWK } from 'jose';
import * as client from 'openid-client';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ClientAuthMethod, ResolvedConfig, ResolvedPrivateKey } from './options.js';
import { sanitisedCause } from './upstream.js';

/**
 * The token-endpoint client authentication of the configuration. The `private_key_jwt` key is imported here, once per
 * `auth()` instance (the server resolver calls this once), into a non-extractable CryptoKey.
 */
export async function clientAuthentication(config: ResolvedConfig): Promise<client.ClientAuth> {
  switch (config.clientAuthMethod) {
    case 'client_secret_basic':
      return client.ClientSecretBasic(config.clientSecret);
    case 'client_secret_post':
      return client.ClientSecretPost(config.clientSecret);
    case 'none':
      return client.None();
    case 'private_key_jwt':
      if (config.privateKey === undefined) {
        throw new AuthError(AuthErrorCode.MISCONFIGURED, 500, "clientAuthMethod 'private_key_jwt' has no privateKey.");
      }
      return privateKeyJwt(config.privateKey);
  }
}

/**
 * The URL the authenticated request goes to, for `audience: 'token_endpoint'`. RFC 7523 §3 allows the token endpoint
 * as audience, Entra ID and Okta require an endpoint URL, and Okta requires exactly the one called: so the revocation
 * and PAR requests name their own endpoints (RFC 9126 §2 lists the PAR endpoint among the audiences a server must
 * accept). Told apart by the parameters each kind of request must carry: `response_type` (RFC 9126 §2.1), `grant_type`
 * (RFC 6749 §4.1.3, §6), `token` (RFC 7009 §2.1); those are the only client-authenticated calls the library makes.
 */
function endpointCalled(as: client.ServerMetadata, body: URLSearchParams): string | undefined {
  // response_type first: a PAR body also carries the app's authorizationParams, which may use any other name.
  if (body.has('response_type')) return as.pushed_authorization_request_endpoint ?? as.token_endpoint;
  if (body.has('grant_type')) return as.token_endpoint;
  if (body.has('token')) return as.revocation_endpoint ?? as.token_endpoint;
  return as.token_endpoint;
}

async function privateKeyJwt(privateKey: ResolvedPrivateKey): Promise<client.ClientAuth> {
  let key: CryptoKey;
  try {
    key = (await importJWK({ ...privateKey.jwk }, privateKey.alg, { extractable: false })) as CryptoKey;
  } catch (err) {
    // options.ts already read the key with node:crypto; WebCrypto may still refuse a combination it does not support.
    throw new AuthError(AuthErrorCode.MISCONFIGURED, 500, `The privateKey could not be imported for ${privateKey.alg}.`, { cause: sanitisedCause(err) });
  }
  return (as, metadata, body, headers) => {
    const sign = client.PrivateKeyJwt(
      { key, kid: privateKey.kid },
      {
        [client.modifyAssertion]: (header, payload) => {
          // oauth4webapi names Ed25519 keys "Ed25519"; servers registered for "EdDSA" want the name they were given.
          header.alg = privateKey.alg;
          if (privateKey.audience === 'token_endpoint') {
            const endpoint = endpointCalled(as, body);
            if (endpoint !== undefined) payload.aud = endpoint;
          }
        },
      },
    );
    return sign(as, metadata, body, headers);
  };
}

/**
 * The method must be one the server advertises (RFC 8414 §2: absent means `client_secret_basic` only), and for
 * `private_key_jwt` the signing algorithm too. Only for discovered metadata: hand-given endpoints advertise nothing.
 */
export function checkClientAuthSupport(config: ResolvedConfig, metadata: client.ServerMetadata): void {
  const method: ClientAuthMethod = config.clientAuthMethod;
  if (method === 'none') return;
  const advertised = metadata.token_endpoint_auth_methods_supported;
  const supported = Array.isArray(advertised) ? advertised : ['client_secret_basic'];
  if (!supported.includes(method)) {
    throw new AuthError(
      AuthErrorCode.DISCOVERY_FAILED,
      502,
      `The authorization server does not support clientAuthMethod '${method}'; it supports: ${supported.join(', ')}.`,
    );
  }
  const algs = metadata.token_endpoint_auth_signing_alg_values_supported;
  if (method === 'private_key_jwt' && config.privateKey !== undefined && Array.isArray(algs) && !algs.includes(config.privateKey.alg)) {
    throw new AuthError(
      AuthErrorCode.DISCOVERY_FAILED,
      502,
      `The authorization server does not accept ${config.privateKey.alg} client assertions; it accepts: ${algs.join(', ')}. Set privateKey.alg or use another key.`,
    );
  }
}

import { compactVerify, createRemoteJWKSet, errors, type JWTVerifyGetKey } from 'jose';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ResolvedConfig } from './options.js';

/**
 * Signature algorithms accepted from the authorization server for the JWTs this library verifies (ID tokens, logout
 * tokens): asymmetric ones only. `none` is never accepted, and `HS*` would need the client
 * secret as a verification key, which this library does not hand to a JWT verifier.
 */
export const SIGNING_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

/** The advertised subset of {@link SIGNING_ALGORITHMS} (all of them when the server advertises nothing). */
export function acceptedAlgorithms(advertised: unknown): string[] {
  return SIGNING_ALGORITHMS.filter((alg) => !Array.isArray(advertised) || advertised.includes(alg));
}

/** The key set could not be fetched: the server's fault (down, 5xx, timeout), not the token's. */
export class KeySetUnavailable extends Error {}

/** Resolves a JWT's verification key from the issuer's `jwks_uri`. */
export type IssuerKeys = (jwksUri: string) => JWTVerifyGetKey;

/**
 * The issuer's signing keys, fetched from its `jwks_uri` by jose: cached, and re-fetched for an unknown `kid` at most
 * every 30 seconds (jose's cooldown, against floods of forged `kid`s), which is how key rotation works. One per `auth()`
 * instance, shared by everything that verifies a JWT: ID tokens at login and refresh, logout tokens.
 */
export function createIssuerKeys(config: ResolvedConfig): IssuerKeys {
  let keys: { uri: string; getKey: JWTVerifyGetKey } | undefined;
  return function keySet(jwksUri) {
    if (keys?.uri !== jwksUri) {
      const url = new URL(jwksUri);
      if (url.protocol !== 'https:' && !(url.protocol === 'http:' && config.allowInsecureRequests)) {
        throw new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, "The authorization server's jwks_uri is not https: (set allowInsecureRequests only in development).");
      }
      const remote = createRemoteJWKSet(url, { timeoutDuration: Math.ceil(config.httpTimeout) });
      const getKey: JWTVerifyGetKey = async (header, token) => {
        try {
          return await remote(header, token);
        } catch (err) {
          // No key for this kid/alg (after the one re-fetch jose does) is the token's fault; anything else is the server's.
          if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
          throw new KeySetUnavailable('The key set could not be fetched.', { cause: err });
        }
      };
      keys = { uri: jwksUri, getKey };
    }
    return keys.getKey;
  };
}

/** What a signature check found; `unknown` when the issuer's keys could not be fetched, which says nothing of the token. */
export type SignatureCheck = 'valid' | 'invalid' | 'unknown';

/**
 * Checks a compact JWS's signature, and only its signature (openid-client has validated the claims), against the
 * issuer's keys, with an asymmetric algorithm the server advertises: `none` and `HS*` are always `invalid`. A server
 * whose metadata cannot give keys at all (no `jwks_uri`, or an `http:` one without `allowInsecureRequests`) is a
 * configuration problem, not a verdict on the token: that rejects with `discovery_failed` (502).
 */
export async function checkSignature(
  keys: IssuerKeys,
  metadata: { jwks_uri?: unknown; id_token_signing_alg_values_supported?: unknown },
  jws: string,
): Promise<SignatureCheck> {
  if (typeof metadata.jwks_uri !== 'string') {
    throw new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, 'The authorization server publishes no jwks_uri, so ID-token signatures cannot be checked.');
  }
  const getKey = keys(metadata.jwks_uri);
  try {
    await compactVerify(jws, getKey, { algorithms: acceptedAlgorithms(metadata.id_token_signing_alg_values_supported) });
    return 'valid';
  } catch (err) {
    return err instanceof KeySetUnavailable ? 'unknown' : 'invalid';
  }
}

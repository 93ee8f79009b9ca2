import { compactVerify, createRemoteJWKSet, customFetch, errors, type JWTVerifyGetKey } from 'jose';
import { endpointRefusal } from './endpoints.js';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ResolvedConfig } from './options.js';
import { serverFetch } from './transport.js';

/**
 * Signature algorithms accepted from the authorization server for the JWTs this library verifies (ID tokens, logout
 * tokens): asymmetric ones only. `none` is never accepted, and `HS*` would need the client
 * secret as a verification key, which this library does not hand to a JWT verifier.
 */
const SIGNING_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

/** The server metadata a JWT verification reads. */
export interface KeyMetadata {
  jwks_uri?: unknown;
  id_token_signing_alg_values_supported?: unknown;
}

/**
 * The key resolver and the algorithms for a JWT from this server: the advertised subset of {@link SIGNING_ALGORITHMS}
 * (all of them when the server advertises nothing). A server whose metadata cannot give keys at all (no `jwks_uri`, one
 * that is not a URL, or an `http:` one without `allowInsecureRequests`) is a configuration problem, not a verdict on the token: that throws
 * `discovery_failed` (502), naming `what` cannot be verified.
 */
export function verificationKeys(keys: IssuerKeys, metadata: KeyMetadata, what: string): { getKey: JWTVerifyGetKey; algorithms: string[] } {
  if (typeof metadata.jwks_uri !== 'string') {
    throw new AuthError(AuthErrorCode.DISCOVERY_FAILED, 502, `The authorization server publishes no jwks_uri, so ${what} cannot be verified.`);
  }
  const advertised = metadata.id_token_signing_alg_values_supported;
  return {
    getKey: keys(metadata.jwks_uri),
    algorithms: SIGNING_ALGORITHMS.filter((alg) => !Array.isArray(advertised) || advertised.includes(alg)),
  };
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
      // Discovery refuses such a jwks_uri (endpoints.ts); this keeps one that gets past it an answer, not a TypeError.
      const refusal = endpointRefusal('jwks_uri', jwksUri, config);
      if (refusal !== undefined) throw refusal;
      const remote = createRemoteJWKSet(new URL(jwksUri), { timeoutDuration: Math.ceil(config.httpTimeout), [customFetch]: serverFetch });
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

/**
 * Runs `verify` with `getKey`, and when the JWT names no `kid` and several of the issuer's keys fit its `alg`, once more
 * with each of those keys in turn until one verifies. OIDC Core §10.1 requires a `kid` when a key set holds several
 * keys, but servers in the field leave it out during a rotation, and jose gives up on the ambiguity: refusing would end
 * every login of such a server at its next ID token. Only a failed signature moves on to the next key; a key that
 * verifies settles it, whatever `verify` then finds wrong with the claims. The key set bounds the tries.
 */
export async function verifyWithCandidates<T>(getKey: JWTVerifyGetKey, verify: (key: JWTVerifyGetKey) => Promise<T>): Promise<T> {
  try {
    return await verify(getKey);
  } catch (err) {
    if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
    let failure: unknown = err;
    for await (const candidate of err) {
      try {
        return await verify(async () => candidate);
      } catch (tried) {
        if (!(tried instanceof errors.JWSSignatureVerificationFailed)) throw tried;
        failure = tried;
      }
    }
    throw failure;
  }
}

/** What a signature check found; `unknown` when the issuer's keys could not be fetched, which says nothing of the token. */
export type SignatureCheck = 'valid' | 'invalid' | 'unknown';

/**
 * Checks an ID token's signature, and only its signature (openid-client has validated the claims), against the
 * issuer's keys, with an asymmetric algorithm the server advertises: `none` and `HS*` are always `invalid`. Throws like
 * {@link verificationKeys} when the server gives no usable keys.
 */
export async function checkSignature(keys: IssuerKeys, metadata: KeyMetadata, jws: string): Promise<SignatureCheck> {
  const { getKey, algorithms } = verificationKeys(keys, metadata, 'ID-token signatures');
  try {
    await verifyWithCandidates(getKey, (key) => compactVerify(jws, key, { algorithms }));
    return 'valid';
  } catch (err) {
    return err instanceof KeySetUnavailable ? 'unknown' : 'invalid';
  }
}

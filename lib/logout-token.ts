import { errors, jwtVerify, type JWTPayload } from 'jose';
import { AuthError, AuthErrorCode } from './errors.js';
import { KeySetUnavailable, verificationKeys, verifyWithCandidates, type IssuerKeys } from './keys.js';
import type { ResolvedConfig } from './options.js';
import type { ServerResolver } from './server.js';

/** The event a logout token must carry (Back-Channel Logout 1.0 §2.4). */
export const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/** A logout token issued longer ago than this is refused even when its `exp` is later (bounds the replay cache). */
export const LOGOUT_TOKEN_MAX_AGE_SECONDS = 600;

/** What a valid logout token tells. */
export interface LogoutTokenClaims {
  sub: string | undefined;
  sid: string | undefined;
  jti: string;
  /** The token's `iat` (epoch seconds, the server's clock). */
  issuedAt: number;
  /** Epoch seconds after which the token is refused anyway (bounds how long its `jti` must be remembered). */
  acceptableUntil: number;
}

export type LogoutTokenVerifier = (token: string) => Promise<LogoutTokenClaims>;

function invalid(reason: string, cause?: unknown): AuthError {
  return new AuthError(AuthErrorCode.INVALID_LOGOUT_TOKEN, 400, `The logout token is invalid: ${reason}.`, cause === undefined ? {} : { cause });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalString(payload: JWTPayload, claim: 'sub' | 'sid'): string | undefined {
  const value = payload[claim];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw invalid(`"${claim}" must be a non-empty string`);
  return value;
}

/**
 * Builds the validator of back-channel `logout_token`s (Back-Channel Logout 1.0 §2.6): signature with the issuer's
 * keys (`jwks_uri` from its metadata, re-fetched for an unknown `kid` after a cooldown), an asymmetric algorithm the server
 * advertises, `iss`, `aud` (the client id alone, or with an `azp` naming it), `iat`, `exp`, `jti`, the back-channel
 * `events` member, no `nonce`, and `sub` and/or `sid`.
 * Replay of `jti` is checked by the caller, which owns the shared store.
 */
export function createLogoutTokenVerifier(config: ResolvedConfig, server: ServerResolver, keys: IssuerKeys): LogoutTokenVerifier {
  return async function verifyLogoutToken(token) {
    const metadata = (await server()).serverMetadata();
    const { getKey, algorithms } = verificationKeys(keys, metadata, 'logout tokens');

    let payload: JWTPayload;
    let typ: string | undefined;
    try {
      const result = await verifyWithCandidates(getKey, (key) =>
        jwtVerify(token, key, {
          algorithms,
          issuer: metadata.issuer,
          audience: config.clientId,
          clockTolerance: config.clockTolerance,
          maxTokenAge: LOGOUT_TOKEN_MAX_AGE_SECONDS,
          requiredClaims: ['iat', 'exp', 'jti'],
        }),
      );
      payload = result.payload;
      typ = result.protectedHeader.typ;
    } catch (err) {
      if (err instanceof AuthError) throw err;
      if (err instanceof KeySetUnavailable) {
        throw new AuthError(AuthErrorCode.IDP_UNREACHABLE, 502, "The authorization server's signing keys could not be fetched.", { cause: err.cause });
      }
      // jose's messages name the failed check and claim, never the token's content.
      throw invalid(err instanceof errors.JOSEError ? err.message.replace(/\.$/, '') : 'it is not a valid signed JWT', err);
    }

    // §2.6 validates `aud` as for ID tokens (OIDC Core §3.1.3.7 (3)-(5)): jwtVerify only checked that it contains the
    // client id. Other audiences are untrusted unless the token was issued to this client (`azp`), as openid-client
    // requires of ID tokens.
    if (Array.isArray(payload.aud) && payload.aud.length !== 1) {
      if (payload.azp === undefined) {
        throw invalid('the "aud" claim includes additional untrusted audiences and there is no "azp" claim naming this client');
      }
      if (payload.azp !== config.clientId) throw invalid('unexpected "azp" (authorized party) claim value');
    }
    // Explicit typing (§2.4) is optional; when present it must not say this is some other kind of JWT.
    if (typ !== undefined && !['logout+jwt', 'jwt'].includes(typ.toLowerCase().replace(/^application\//, ''))) {
      throw invalid(`unexpected "typ" header "${typ.slice(0, 40)}"`);
    }
    if (!isObject(payload.events) || !isObject(payload.events[BACKCHANNEL_LOGOUT_EVENT])) {
      throw invalid(`the "events" claim must contain "${BACKCHANNEL_LOGOUT_EVENT}" with an object value`);
    }
    // A nonce marks an ID token; a logout token that has one could be an ID token replayed here (§2.6 step 7).
    if ('nonce' in payload) throw invalid('it must not contain a "nonce" claim');
    const sub = optionalString(payload, 'sub');
    const sid = optionalString(payload, 'sid');
    if (sub === undefined && sid === undefined) throw invalid('it must contain "sub", "sid" or both');
    if (typeof payload.jti !== 'string' || payload.jti === '') throw invalid('"jti" must be a non-empty string');

    // Both checked by jwtVerify as numbers; the cast only narrows.
    const iat = payload.iat as number;
    const exp = payload.exp as number;
    return {
      sub,
      sid,
      jti: payload.jti,
      issuedAt: iat,
      acceptableUntil: Math.min(exp, iat + LOGOUT_TOKEN_MAX_AGE_SECONDS) + config.clockTolerance,
    };
  };
}

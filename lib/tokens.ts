import type * as client from 'openid-client';

/** The token set as the app sees it on `req.auth.tokens`. The refresh token is never exposed. */
export interface TokenSet {
  readonly accessToken: string;
  /** `Bearer` (or `DPoP`), normalised to that casing. */
  readonly tokenType: string;
  /** Expiry of the access token, epoch seconds; undefined when the server did not say (`expires_in` absent). */
  readonly expiresAt: number | undefined;
  /** Granted scope, when the server said. */
  readonly scope: string | undefined;
}

/** What is kept server-side. Plain data: openid-client's result has non-enumerable helpers that JSON would lose. */
export interface StoredTokens {
  accessToken: string;
  tokenType: string;
  expiresAt?: number;
  /** Issued lifetime in seconds, kept to bound the refresh skew for short-lived tokens. */
  lifetime?: number;
  scope?: string;
  idToken?: string;
  refreshToken?: string;
}

/** Epoch seconds now. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function normaliseTokenType(type: string): string {
  const lower = type.toLowerCase();
  return lower === 'bearer' ? 'Bearer' : lower === 'dpop' ? 'DPoP' : type;
}

/**
 * Turns a token-endpoint response into the stored form. `previous` supplies what a refresh response may omit: a
 * refresh token that was not rotated, the ID token, the scope.
 */
export function toStoredTokens(
  response: client.TokenEndpointResponse,
  previous?: StoredTokens,
  now: number = nowSeconds(),
): StoredTokens {
  const lifetime = typeof response.expires_in === 'number' && response.expires_in >= 0 ? Math.floor(response.expires_in) : undefined;
  const stored: StoredTokens = {
    accessToken: response.access_token,
    tokenType: normaliseTokenType(response.token_type),
  };
  if (lifetime !== undefined) {
    stored.expiresAt = now + lifetime;
    stored.lifetime = lifetime;
  }
  const scope = response.scope ?? previous?.scope;
  if (scope !== undefined) stored.scope = scope;
  const idToken = response.id_token ?? previous?.idToken;
  if (idToken !== undefined) stored.idToken = idToken;
  const refreshToken = response.refresh_token ?? previous?.refreshToken;
  if (refreshToken !== undefined) stored.refreshToken = refreshToken;
  return stored;
}

/**
 * The copy of the tokens that the session carries: all but the raw ID token. express-session parses the session and
 * hashes it three times on every request, and the raw ID token is more than half of a logged-in session; its validated
 * claims are in the session already. The whole set stays in the token store (`req.auth.getIdToken()`, logout's
 * `id_token_hint`).
 */
export function sessionCopy(tokens: StoredTokens): StoredTokens {
  if (tokens.idToken === undefined) return tokens;
  const { idToken: _kept, ...copy } = tokens;
  return copy;
}

/** The read-only view of stored tokens for `req.auth.tokens`. */
export function publicTokens(stored: StoredTokens): TokenSet {
  return Object.freeze({
    accessToken: stored.accessToken,
    tokenType: stored.tokenType,
    expiresAt: stored.expiresAt,
    scope: stored.scope,
  });
}

/** True when the access token has expired, or will within `skew` seconds. Unknown expiry never counts as expired. */
export function isExpired(stored: StoredTokens, skew = 0, now: number = nowSeconds()): boolean {
  return stored.expiresAt !== undefined && stored.expiresAt - skew <= now;
}

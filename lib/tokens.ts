import type * as client from 'openid-client';

/**
 * The token set as the app sees it on `req.auth.tokens`. The refresh token is never exposed.
 *
 * @example
 * ```ts
 * const tokens: TokenSet | undefined = req.auth.tokens;
 * const secondsLeft = tokens?.expiresAt === undefined ? undefined : tokens.expiresAt - Math.floor(Date.now() / 1000);
 * ```
 */
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

/** `Bearer` and `DPoP` as their RFCs spell them, whatever the server's (or oauth4webapi's) casing; other types as given. */
export function normaliseTokenType(type: string): string {
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
 * The session's copy of a login's tokens, packed into one string (see {@link sessionCopy}). Branded so that a plain
 * string, or the unpacked set, cannot be put into the session by mistake.
 */
export type PackedTokens = string & { readonly __packedTokens: unique symbol };

// The format's version tag, first in every packed copy: a later format gets another tag, and both can be read.
const PACK_FORMAT = 't1';
const PACK_HEAD = new RegExp(`^${PACK_FORMAT}\\|(\\d*)\\|(\\d*)\\|`);

// Whole seconds, as plain digits: an absurd `expires_in` (1e21 prints as "1e+21") must not make a copy unreadable.
function packNumber(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? '' : String(Math.min(Math.max(Math.floor(value), 0), Number.MAX_SAFE_INTEGER));
}

function packString(value: string | undefined): string {
  return value === undefined ? '-' : `${value.length}:${value}`;
}

/**
 * The copy of the tokens that the session carries: all but the raw ID token, in one string. express-session parses
 * the session once and serialises and hashes it (with a replacer function, key by key) up to four times on every
 * request; as a nested object, the copy made every authenticated request measurably costlier, as one string it
 * costs next to nothing (bench/FIXES.md §5). Its validated claims are in the session already, and
 * the whole set stays in the token store (`req.auth.getIdToken()`, logout's `id_token_hint`).
 *
 * Format `t1|<expiresAt>|<lifetime>|` then tokenType, accessToken, scope, refreshToken, each as `<length>:<value>`
 * or `-` when absent: lengths, not separators, so any character a server puts in a token is kept as it is.
 */
export function sessionCopy(tokens: StoredTokens): PackedTokens {
  return `${PACK_FORMAT}|${packNumber(tokens.expiresAt)}|${packNumber(tokens.lifetime)}|${packString(tokens.tokenType)}${packString(tokens.accessToken)}${packString(tokens.scope)}${packString(tokens.refreshToken)}` as PackedTokens;
}

function unpackNumber(text: string): number | undefined | null {
  if (text === '') return undefined;
  if (!/^\d{1,16}$/.test(text)) return null;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : null;
}

/**
 * The session's copy of the tokens, or undefined when it is not one this library wrote (a damaged or foreign value:
 * callers then rely on the token store). Also reads the unpacked object that sessions written before the packed
 * format hold, so that logins survive an upgrade.
 */
export function unpackTokens(packed: unknown): StoredTokens | undefined {
  if (typeof packed === 'object' && packed !== null) {
    const legacy = packed as Partial<StoredTokens>;
    return typeof legacy.accessToken === 'string' && typeof legacy.tokenType === 'string' ? (legacy as StoredTokens) : undefined;
  }
  if (typeof packed !== 'string') return undefined;
  const head = PACK_HEAD.exec(packed);
  if (head === null) return undefined;
  const expiresAt = unpackNumber(head[1]!);
  const lifetime = unpackNumber(head[2]!);
  if (expiresAt === null || lifetime === null) return undefined;
  let at = head[0].length;
  const fields: Array<string | undefined> = [];
  for (let i = 0; i < 4; i++) {
    if (packed[at] === '-') {
      fields.push(undefined);
      at += 1;
      continue;
    }
    const colon = packed.indexOf(':', at);
    const length = colon === -1 ? null : unpackNumber(packed.slice(at, colon));
    if (length === null || length === undefined || colon + 1 + length > packed.length) return undefined;
    fields.push(packed.slice(colon + 1, colon + 1 + length));
    at = colon + 1 + length;
  }
  const [tokenType, accessToken, scope, refreshToken] = fields;
  if (at !== packed.length || tokenType === undefined || accessToken === undefined) return undefined;
  const tokens: StoredTokens = { accessToken, tokenType };
  if (expiresAt !== undefined) tokens.expiresAt = expiresAt;
  if (lifetime !== undefined) tokens.lifetime = lifetime;
  if (scope !== undefined) tokens.scope = scope;
  if (refreshToken !== undefined) tokens.refreshToken = refreshToken;
  return tokens;
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

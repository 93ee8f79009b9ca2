import { exportJWK, importJWK, type JWK } from 'jose';
import * as client from 'openid-client';
import { AuthError, AuthErrorCode } from './errors.js';
import type { ResolvedConfig } from './options.js';
import type { Runtime } from './runtime.js';
import { normaliseTokenType } from './tokens.js';
import { sanitisedCause } from './upstream.js';

/** Every DPoP server supports ES256 (oidc-provider, Keycloak, Okta); one algorithm keeps the stored keys uniform. */
const DPOP_ALG = 'ES256';
/** Handles kept per process; each remembers the server's last DPoP nonce, which spares a retry per request. */
const MAX_CACHED_HANDLES = 1000;

/** What DPoP needs from the runtime: the server configuration (its resolver is one per `auth()` instance). */
export type DPoPServices = Pick<Runtime, 'server'>;

const handleCaches = new WeakMap<DPoPServices['server'], Map<string, Promise<client.DPoPHandle>>>();

/** The part of a login (or transaction) that DPoP needs: its private key, absent when the login is not DPoP-bound. */
export interface DPoPBound {
  readonly dpopKey?: JWK | undefined;
}

/** The server must accept ES256 proofs when it lists what it accepts (RFC 9449 §5.1). */
export function checkDPoPSupport(config: ResolvedConfig, metadata: client.ServerMetadata): void {
  const algs = metadata.dpop_signing_alg_values_supported;
  if (config.dpop && Array.isArray(algs) && !algs.includes(DPOP_ALG)) {
    throw new AuthError(
      AuthErrorCode.DISCOVERY_FAILED,
      502,
      `dpop is on, but the authorization server does not accept ${DPOP_ALG} DPoP proofs; it accepts: ${algs.join(', ')}.`,
    );
  }
}

async function keyPairFrom(jwk: JWK): Promise<CryptoKeyPair> {
  const publicJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y };
  // The private half stays non-extractable in memory; openid-client needs the public half extractable for the header.
  const [privateKey, publicKey] = await Promise.all([
    importJWK({ ...jwk }, DPOP_ALG, { extractable: false }),
    importJWK(publicJwk, DPOP_ALG, { extractable: true }),
  ]);
  return { privateKey: privateKey as CryptoKey, publicKey: publicKey as CryptoKey };
}

// Keyed by the resolver rather than the runtime object, so that callers holding a narrower view of the runtime (the
// refresher) share the handles, and with them the nonces.
function cacheOf(runtime: DPoPServices): Map<string, Promise<client.DPoPHandle>> {
  let cache = handleCaches.get(runtime.server);
  if (cache === undefined) {
    cache = new Map();
    handleCaches.set(runtime.server, cache);
  }
  return cache;
}

/** The handle of a stored key, shared by the requests of the same login in this process. */
function handleFor(runtime: DPoPServices, jwk: JWK): Promise<client.DPoPHandle> {
  const cache = cacheOf(runtime);
  // The public x coordinate names the key pair; it is no secret.
  const key = `${String(jwk.x)}.${String(jwk.y)}`;
  const cached = cache.get(key);
  if (cached !== undefined) {
    cache.delete(key);
    cache.set(key, cached);
    return cached;
  }
  const pending = (async () => {
    const configuration = await runtime.server();
    let pair: CryptoKeyPair;
    try {
      pair = await keyPairFrom(jwk);
    } catch (err) {
      throw new AuthError(AuthErrorCode.LOGIN_REQUIRED, 401, "The login's DPoP key could not be read; log in again.", { cause: sanitisedCause(err) });
    }
    return client.getDPoPHandle(configuration, pair);
  })();
  pending.catch(() => cache.delete(key));
  cache.set(key, pending);
  if (cache.size > MAX_CACHED_HANDLES) cache.delete(cache.keys().next().value as string);
  return pending;
}

/**
 * A fresh key pair for one login, made at `/login`: the private JWK goes into the transaction (and then the login),
 * server-side only, and the handle signs the proofs.
 */
export async function createDPoPKey(runtime: DPoPServices): Promise<{ jwk: JWK; handle: client.DPoPHandle }> {
  const pair = await client.randomDPoPKeyPair(DPOP_ALG, { extractable: true });
  const { kty, crv, x, y, d } = await exportJWK(pair.privateKey);
  const jwk: JWK = { kty, crv, x, y, d };
  return { jwk, handle: await handleFor(runtime, jwk) };
}

/**
 * The DPoP request options of a login: `{ DPoP: handle }` for `client.authorizationCodeGrant`,
 * `client.refreshTokenGrant`, `client.fetchProtectedResource`…, or `undefined` when the login is not DPoP-bound.
 *
 * @example
 * ```ts
 * const response = await client.refreshTokenGrant(configuration, refreshToken, undefined, await dpopOptionsFor(runtime, login));
 * if (dpopDowngrade(runtime.config, login, response) !== undefined) throw new Error('not DPoP-bound');
 * ```
 */
export async function dpopOptionsFor(runtime: DPoPServices, login: DPoPBound): Promise<{ DPoP: client.DPoPHandle } | undefined> {
  if (login.dpopKey === undefined) return undefined;
  return { DPoP: await handleFor(runtime, login.dpopKey) };
}

/**
 * With `dpop` on, a Bearer token for a DPoP-bound login or transaction (one with a key, whose request carried a proof)
 * is a downgrade the app did not ask for (RFC 9449 §5: the server decides, so the client has to look): the message to
 * give, or undefined when the token is DPoP-bound, when `dpop` is off, or when the login has no key.
 *
 * A login made before `dpop` was turned on has no key: its requests carry no proof, so Bearer is exactly what it asked
 * for, and it stays Bearer until the user logs in again. Treating that as a downgrade would end every existing login
 * (and revoke its grant) at its first refresh after the switch.
 */
export function dpopDowngrade(config: ResolvedConfig, binding: DPoPBound, response: { token_type: string }): string | undefined {
  if (!config.dpop || binding.dpopKey === undefined || response.token_type.toLowerCase() === 'dpop') return undefined;
  // oauth4webapi lowercases token_type; the message names the scheme as RFC 6750 spells it.
  return `dpop is on, but the authorization server issued a ${normaliseTokenType(response.token_type)} token instead of a DPoP-bound one; enable DPoP for this client at the server.`;
}

/**
 * A code exchange that gets a {@link dpopDowngrade} fails the login (`token_exchange_failed`, 400). `transaction` is the
 * login transaction: one started before `dpop` was turned on has no key, and completes as a Bearer login.
 */
export function assertDPoPBound(config: ResolvedConfig, transaction: DPoPBound, response: { token_type: string }): void {
  const downgrade = dpopDowngrade(config, transaction, response);
  if (downgrade !== undefined) throw new AuthError(AuthErrorCode.TOKEN_EXCHANGE_FAILED, 400, downgrade);
}

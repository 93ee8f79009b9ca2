import type { JWK } from 'jose';
import * as client from 'openid-client';
import type { OAuthSessionState } from './session.js';

/** One pending login, kept server-side until its callback consumes it. */
export interface Transaction {
  /** PKCE code_verifier (RFC 7636); only its S256 hash leaves the server. */
  verifier: string;
  /** OIDC nonce, when the scope has `openid`. */
  nonce?: string;
  /**
   * The `max_age` the authorization request asked for, in seconds (validated at startup); the callback refuses an ID
   * token whose `auth_time` is missing or older. Absent when no `max_age` was sent.
   */
  maxAge?: number;
  /** The DPoP private key the login will be bound to, when `dpop` is on. */
  dpopKey?: JWK;
  /** Sanitised same-origin path to land on after login. */
  returnTo: string;
  /** Creation time, epoch milliseconds. */
  createdAt: number;
}

/** At most this many logins may be pending per session (several tabs); the oldest is dropped. */
export const MAX_PENDING_TRANSACTIONS = 10;
/** A transaction older than this is refused at the callback. */
export const TRANSACTION_TTL_MS = 10 * 60 * 1000;

/** Generated `state` values are base64url (openid-client's `randomState()`: 32 random bytes). */
const STATE_FORMAT = /^[A-Za-z0-9_-]{22,128}$/;

function isLive(tx: Transaction, now: number): boolean {
  return now - tx.createdAt < TRANSACTION_TTL_MS && tx.createdAt <= now + 60_000;
}

/** Creates a transaction, stores it under its state and returns both; expired and surplus ones are dropped. */
export function createTransaction(
  state: OAuthSessionState,
  options: { openid: boolean; returnTo: string; now?: number },
): { state: string; transaction: Transaction } {
  const now = options.now ?? Date.now();
  const stateValue = client.randomState();
  const transaction: Transaction = {
    verifier: client.randomPKCECodeVerifier(),
    ...(options.openid ? { nonce: client.randomNonce() } : {}),
    returnTo: options.returnTo,
    createdAt: now,
  };
  const live = Object.entries(state.tx ?? {})
    .filter(([, tx]) => isLive(tx, now))
    .sort(([, a], [, b]) => a.createdAt - b.createdAt)
    .slice(-(MAX_PENDING_TRANSACTIONS - 1));
  state.tx = Object.fromEntries([...live, [stateValue, transaction]]);
  return { state: stateValue, transaction };
}

/**
 * Removes the transaction of `stateValue` from the session and returns it when it is live. It is deleted before
 * anything checks it, so a state is usable once whatever happens next.
 */
export function takeTransaction(state: OAuthSessionState | undefined, stateValue: string, now = Date.now()): Transaction | undefined {
  if (state?.tx === undefined || !STATE_FORMAT.test(stateValue) || !Object.hasOwn(state.tx, stateValue)) return undefined;
  const transaction = state.tx[stateValue];
  delete state.tx[stateValue];
  if (Object.keys(state.tx).length === 0) delete state.tx;
  return transaction !== undefined && isLive(transaction, now) ? transaction : undefined;
}

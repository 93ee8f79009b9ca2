import * as client from 'openid-client';
import type { StoredTokens } from './tokens.js';

/**
 * What revocation needs of a token set. The access token is optional for an answer the server issued without one (a
 * refused answer can still carry a live refresh token).
 */
export type RevocableTokens = Partial<Pick<StoredTokens, 'accessToken' | 'refreshToken'>>;

/**
 * Revokes a login's refresh token and access token at the server's `revocation_endpoint` (RFC 7009), when it has
 * one. Best effort by design: the local logout has already happened, and a server that is down or refuses must not
 * keep the user logged in. Resolves to how many tokens the server accepted to revoke.
 *
 * The refresh token goes first in the request list because revoking it ends the grant at most servers (RFC 7009
 * §2.1); the access token is revoked too for servers that keep it alive until it expires.
 */
export async function revokeTokens(configuration: client.Configuration, tokens: RevocableTokens): Promise<number> {
  if (typeof configuration.serverMetadata().revocation_endpoint !== 'string') return 0;
  const requests: Array<Promise<void>> = [];
  if (tokens.refreshToken !== undefined) {
    requests.push(client.tokenRevocation(configuration, tokens.refreshToken, { token_type_hint: 'refresh_token' }));
  }
  if (tokens.accessToken !== undefined) {
    requests.push(client.tokenRevocation(configuration, tokens.accessToken, { token_type_hint: 'access_token' }));
  }
  const results = await Promise.allSettled(requests);
  return results.filter((r) => r.status === 'fulfilled').length;
}

/**
 * Revokes tokens nobody will use (a login that failed after the server issued them, or that ended during its refresh):
 * a refresh token left alive at the server is a live grant that no client holds. Best effort: never rejects, whatever
 * the server does, so callers that must not wait for it can leave it running.
 */
export async function revokeUnused(configuration: client.Configuration | Promise<client.Configuration>, tokens: RevocableTokens): Promise<void> {
  try {
    await revokeTokens(await configuration, tokens);
  } catch {
    // The caller's outcome is decided already; a server that is down or refuses cannot change it.
  }
}

import * as client from 'openid-client';
import type { StoredTokens } from './tokens.js';

/**
 * Revokes a login's refresh token and access token at the server's `revocation_endpoint` (RFC 7009), when it has
 * one. Best effort by design: the local logout has already happened, and a server that is down or refuses must not
 * keep the user logged in. Resolves to how many tokens the server accepted to revoke.
 *
 * The refresh token goes first in the request list because revoking it ends the grant at most servers (RFC 7009
 * §2.1); the access token is revoked too for servers that keep it alive until it expires.
 */
export async function revokeTokens(configuration: client.Configuration, tokens: StoredTokens): Promise<number> {
  if (typeof configuration.serverMetadata().revocation_endpoint !== 'string') return 0;
  const requests: Array<Promise<void>> = [];
  if (tokens.refreshToken !== undefined) {
    requests.push(client.tokenRevocation(configuration, tokens.refreshToken, { token_type_hint: 'refresh_token' }));
  }
  requests.push(client.tokenRevocation(configuration, tokens.accessToken, { token_type_hint: 'access_token' }));
  const results = await Promise.allSettled(requests);
  return results.filter((r) => r.status === 'fulfilled').length;
}

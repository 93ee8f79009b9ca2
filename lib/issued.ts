import type * as client from 'openid-client';
import type { RevocableTokens } from './revocation.js';
import { serverFetch } from './transport.js';

/**
 * Tokens a server issued in an answer that openid-client then refused: it checks a token response (its shape, the ID
 * token's claims: nonce, audience, expiry, `max_age`) inside the grant, after the server has issued the tokens, and
 * its error does not carry them. What each grant run inside {@link withIssuedTokens} received is kept aside here, so
 * that a login that fails that way can still revoke them (RFC 7009): a refresh token nobody holds must not stay a
 * live grant.
 *
 * The grants are told apart by the credential their token request carries (the code, or the refresh token), not by
 * an AsyncLocalStorage: on Node 20 one `AsyncLocalStorage.run()` turns on a hook that every promise and async resource
 * of the process pays for from then on, every authenticated request included (about 3 % of case 1's throughput in
 * `npm run bench:ab`, bench/FIXES.md §8).
 */
interface Slot {
  body?: Promise<unknown>;
}

/** The grants running inside {@link withIssuedTokens}, by the credential their token request carries. */
const running = new Map<string, Slot>();

/** The code of an authorization-code grant's request body, or the refresh token of a refresh grant's. */
function grantCredential(body: unknown): string | undefined {
  // oauth4webapi sends every token request's form as URLSearchParams.
  if (!(body instanceof URLSearchParams)) return undefined;
  switch (body.get('grant_type')) {
    case 'authorization_code':
      return body.get('code') ?? undefined;
    case 'refresh_token':
      return body.get('refresh_token') ?? undefined;
    default:
      return undefined;
  }
}

/**
 * The configuration's fetch: the library's own ({@link serverFetch}), plus, for a grant running inside
 * {@link withIssuedTokens}, a copy of the token answer's JSON body, read from a clone of the answer.
 */
export const recordingFetch: client.CustomFetch = async (url, options) => {
  const response = await serverFetch(url, options);
  // The token endpoint's answer: the first successful POST of the grant (a DPoP nonce retry follows a refused one).
  if (running.size > 0 && response.ok && options.method === 'POST') {
    const credential = grantCredential(options.body);
    const slot = credential === undefined ? undefined : running.get(credential);
    if (slot !== undefined && slot.body === undefined) slot.body = response.clone().json().catch(() => undefined);
  }
  return response;
};

/**
 * Runs a grant whose token request carries `credential` (the authorization code, or the refresh token); when it
 * rejects, `onIssued` gets the tokens the server's answer carried, if it carried any, before the error goes on.
 */
export async function withIssuedTokens<T>(credential: string, grant: () => Promise<T>, onIssued: (tokens: RevocableTokens) => void): Promise<T> {
  // A second grant with the same credential at once (a code replayed into another callback) records nothing: the
  // answer it would see is the first grant's, whose tokens that grant handles.
  if (running.has(credential)) return grant();
  const slot: Slot = {};
  running.set(credential, slot);
  try {
    return await grant();
  } catch (err) {
    const body = (await slot.body) as { access_token?: unknown; refresh_token?: unknown } | undefined;
    // Either token alone is worth revoking: openid-client refuses an answer without an access token, and the refresh
    // token such an answer carries is a live grant all the same.
    const accessToken = typeof body?.access_token === 'string' ? body.access_token : undefined;
    const refreshToken = typeof body?.refresh_token === 'string' ? body.refresh_token : undefined;
    if (accessToken !== undefined || refreshToken !== undefined) onIssued({ accessToken, refreshToken });
    throw err;
  } finally {
    running.delete(credential);
  }
}

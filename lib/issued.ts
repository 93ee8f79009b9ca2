import { AsyncLocalStorage } from 'node:async_hooks';
import type * as client from 'openid-client';
import type { RevocableTokens } from './revocation.js';

/**
 * Tokens a server issued in an answer that openid-client then refused: it checks a token response (its shape, the ID
 * token's claims: nonce, audience, expiry, `max_age`) inside the grant, after the server has issued the tokens, and
 * its error does not carry them. What each grant run inside {@link withIssuedTokens} received is kept aside here, so
 * that a login that fails that way can still revoke them (RFC 7009): a refresh token nobody holds must not stay a
 * live grant.
 */
const received = new AsyncLocalStorage<{ body?: Promise<unknown> }>();

/**
 * The configuration's fetch: Node's own, plus, inside {@link withIssuedTokens}, a copy of the token answer's JSON body, read from a clone alongside the grant's own reading (not before it: a body that stalls must still fail
 * the grant as a timeout).
 */
export const recordingFetch: client.CustomFetch = async (url, options) => {
  // openid-client types the body with Uint8Array<ArrayBufferLike>, the DOM lib's BodyInit wants ArrayBuffer-backed views: the same values at run time.
  const response = await fetch(url, { ...options, body: options.body as BodyInit | null });
  const slot = received.getStore();
  // The token endpoint's answer: the first successful POST (a DPoP nonce retry follows a refused one; key sets are GETs).
  if (slot !== undefined && slot.body === undefined && response.ok && options.method === 'POST') {
    slot.body = response.clone().json().catch(() => undefined);
  }
  return response;
};

/**
 * Runs a grant; when it rejects, `onIssued` gets the tokens the server's answer carried, if it carried any, before the
 * error goes on.
 */
export async function withIssuedTokens<T>(grant: () => Promise<T>, onIssued: (tokens: RevocableTokens) => void): Promise<T> {
  const slot: { body?: Promise<unknown> } = {};
  try {
    return await received.run(slot, grant);
  } catch (err) {
    const body = (await slot.body) as { access_token?: unknown; refresh_token?: unknown } | undefined;
    if (typeof body?.access_token === 'string') {
      onIssued({ accessToken: body.access_token, ...(typeof body.refresh_token === 'string' ? { refreshToken: body.refresh_token } : {}) });
    }
    throw err;
  }
}

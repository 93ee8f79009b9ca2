/**
 * The issuer as written versus as a `URL` object, against oidc-provider, whose issuer ('http://localhost:<port>') has
 * no trailing '/' while `new URL(issuer).href` has one. ID tokens carry the issuer without it. (A bare-origin URL object
 * as `server.issuer` is refused at startup: see options.test.ts.)
 */
import { describe, expect, test } from '@jest/globals';
import { CLIENT_ID, CLIENT_SECRET, listen, mountApp } from '../helpers/app.js';
import { startProvider } from '../helpers/provider.js';
import type { AuthOptions } from '../../lib/index.js';

/** Starts a provider and an app configured by `auth(issuer)`, runs a whole login and returns the app's view of it. */
async function loginWith(auth: (issuer: string) => Partial<AuthOptions>): Promise<{ issuer: string; status: number; claims: Record<string, unknown> }> {
  const listener = await listen();
  const provider = await startProvider({
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [`${listener.url}/callback`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
  });
  const mounted = mountApp(listener, provider.issuer, { auth: auth(provider.issuer) });
  try {
    const landed = await mounted.browser.login(`${mounted.appUrl}/login?returnTo=/me`);
    const claims = landed.status === 200 ? ((JSON.parse(landed.body) as { claims: Record<string, unknown> }).claims ?? {}) : {};
    return { issuer: provider.issuer, status: landed.status, claims };
  } finally {
    await listener.close();
    await provider.close();
    mounted.redis.disconnect();
  }
}

describe('issuer identifiers', () => {
  test('the provider under test writes its issuer without a trailing slash (premise)', async () => {
    const { issuer, claims } = await loginWith(() => ({}));
    expect(issuer).not.toMatch(/\/$/);
    expect(claims.iss).toBe(issuer);
  });

  test.each<[string, (issuer: string) => string | URL]>([
    ['a URL object (which adds a trailing slash)', (issuer) => new URL(issuer)],
    ['a string with a trailing slash', (issuer) => `${issuer}/`],
  ])('`issuer` given as %s still logs in: ID tokens are checked against the discovered issuer', async (_name, form) => {
    const { issuer, status, claims } = await loginWith((i) => ({ issuer: form(i) }));
    expect(status).toBe(200);
    expect(claims.iss).toBe(issuer);
  });

  test('`server.issuer` given as a string is compared exactly as written: a login with the provider works', async () => {
    const { issuer, status, claims } = await loginWith((i) => ({
      issuer: undefined,
      server: { issuer: i, authorizationEndpoint: `${i}/auth`, tokenEndpoint: `${i}/token`, jwksUri: `${i}/jwks` },
    }));
    expect(status).toBe(200);
    expect(claims.iss).toBe(issuer);
  });
});

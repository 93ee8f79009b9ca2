/**
 * Logging the bench's apps in: the library and express-openid-connect for real, through the in-process provider; the
 * floor (and floor-layers) through its bench-only login, which stores the claims the library serves.
 */
import type { ClientMetadata } from 'oidc-provider';
import { Browser } from '../test/helpers/browser.js';
import type { AppProcess } from './processes.js';

export const CLIENT_SECRET = 'bench-client-secret-not-for-production';

/** The provider's registration of an app's OAuth client. */
export function oauthClient(clientId: string, appUrl: string): ClientMetadata {
  return {
    client_id: clientId,
    client_secret: CLIENT_SECRET,
    redirect_uris: [`${appUrl}/callback`],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  };
}

/** A logged-in browser: the whole login over HTTP, as a user would do it. */
export async function oauthLogin(app: AppProcess): Promise<Browser> {
  const browser = new Browser();
  await browser.login(`${app.url}/login`, { login: 'alice' });
  await expectLoggedIn(app, browser);
  return browser;
}

/** The claims `GET /me` answers for the browser's session; throws unless it is the logged-in test user. */
export async function expectLoggedIn(app: AppProcess, browser: Browser): Promise<Record<string, unknown>> {
  const me = await browser.request(`${app.url}/me`, { headers: { accept: 'application/json' } });
  if (me.status !== 200) throw new Error(`${app.name}: not logged in after the login flow (GET /me → ${me.status})`);
  const claims = JSON.parse(me.body) as Record<string, unknown>;
  if (claims.sub !== 'alice') throw new Error(`${app.name}: /me does not answer the logged-in user`);
  return claims;
}

/** The floor's bench-only login (also floor-layers'): the session stores `claims` as the user. */
export async function claimsLogin(app: AppProcess, claims: Record<string, unknown>): Promise<Browser> {
  const browser = new Browser();
  const response = await browser.request(`${app.url}/login`, { method: 'POST', body: JSON.stringify(claims), headers: { 'content-type': 'application/json' } });
  if (response.status !== 303) throw new Error(`${app.name}: login answered ${response.status}`);
  await expectLoggedIn(app, browser);
  return browser;
}

/** The `Cookie` header the browser sends to the app's `/me`. */
export function cookieFor(app: AppProcess, browser: Browser): string {
  const cookie = browser.cookieHeader(new URL(`${app.url}/me`));
  if (cookie === '') throw new Error(`${app.name}: the login left no cookie`);
  return cookie;
}

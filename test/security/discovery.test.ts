/**
 * Discovery (RFC 8414 §3.3, OIDC Discovery §4.3): the metadata must name the configured issuer and support what the
 * library needs; anything else is refused when the first login starts — before any authorization request, without a
 * session — and retried on the next login rather than cached (fail closed, recover without a restart).
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { AuthError, type AuthOptions } from '../../lib/index.js';
import { resolveOptions } from '../../lib/options.js';
import { createServerResolver } from '../../lib/server.js';
import { listen } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { RogueProvider, startRogueStack } from '../helpers/rogue-provider.js';
import { expectRefusal, type Observed } from '../helpers/security.js';

let rogue: RogueProvider;

beforeAll(async () => {
  rogue = await RogueProvider.start();
});
afterAll(async () => rogue.close());

const DISCOVERY = 'GET /.well-known/openid-configuration';

/** A fresh app (empty discovery cache) on the shared rogue server, with `metadata` edits applied. */
async function refusedAtLogin(edit: (metadata: Record<string, unknown>) => void, detail: RegExp): Promise<void> {
  edit(rogue.metadata);
  const app = await startRogueStack({ rogue });
  try {
    const observed: Observed = { redis: app.redis, sessionPrefix: app.sessionPrefix, traffic: rogue.traffic };
    const browser = new Browser();
    const refused = await expectRefusal(observed, () => browser.request(`${app.appUrl}/login`), { status: 502, code: 'discovery_failed', calls: [DISCOVERY] });
    expect(refused.body).toMatch(detail);
    expect(refused.headers.getSetCookie()).toEqual([]);

    // The failure is not cached: once the server is fixed, the same app logs in.
    rogue.reset();
    const started = await browser.request(`${app.appUrl}/login`);
    expect(started.status).toBe(302);
    expect(new URL(started.headers.get('location')!).origin).toBe(rogue.issuer);
  } finally {
    rogue.reset();
    await app.close();
  }
}

test('metadata naming another issuer is refused (RFC 8414 §3.3)', async () => {
  // The configured issuer as openid-client compares it: a URL href, so a bare origin ends in '/'. (The page escapes quotes.)
  const q = "(?:'|&#39;)";
  const configured = `${rogue.issuer}/`.replace(/[./]/g, '\\$&');
  await refusedAtLogin((m) => (m.issuer = 'https://attacker.example'), new RegExp(`another issuer \\(${q}https://attacker\\.example${q}\\) than the configured one \\(${q}${configured}${q}\\)`));
});

test('metadata naming another tenant on the same host is refused', async () => {
  // Compared as URLs (oauth4webapi): `https://idp` and `https://idp/` are one identifier; any other path is not.
  await refusedAtLogin((m) => (m.issuer = `${rogue.issuer}/tenants/other`), /another issuer/);
});

test('metadata naming the issuer on another port is refused', async () => {
  await refusedAtLogin((m) => (m.issuer = rogue.issuer.replace(/:(\d+)$/, (_, port: string) => `:${Number(port) + 1}`)), /another issuer/);
});

test('metadata without response_type=code is refused', async () => {
  await refusedAtLogin((m) => (m.response_types_supported = ['id_token', 'token']), /response_type=code/);
});

test('metadata without the configured client authentication method is refused (no silent switch)', async () => {
  await refusedAtLogin((m) => (m.token_endpoint_auth_methods_supported = ['client_secret_post']), /client_secret_basic/);
});

test('an unreachable issuer fails closed: 502, no session, nobody let in', async () => {
  const closed = await listen();
  const issuer = closed.url;
  await closed.close();
  const app = await startRogueStack({ rogue, auth: { issuer } });
  try {
    const observed: Observed = { redis: app.redis, sessionPrefix: app.sessionPrefix, traffic: rogue.traffic };
    const refused = await expectRefusal(observed, () => app.browser.request(`${app.appUrl}/login`), { status: 502, code: 'idp_unreachable' });
    // The message names the document it tried to fetch (public: the issuer is).
    expect(refused.body).toContain(`could not be reached for discovery (${issuer}/.well-known/openid-configuration)`);
  } finally {
    await app.close();
  }
});

/** The error of the first discovery by an app configured with `auth` (no login: the resolver alone). */
async function discoveryFailure(auth: Partial<AuthOptions>): Promise<AuthError> {
  const config = resolveOptions({ clientId: 'app', clientSecret: 'secret', redirectUri: 'http://127.0.0.1:3000/callback', allowInsecureRequests: true, ...auth });
  const failure = await createServerResolver(config)().then(
    () => new Error('discovery succeeded'),
    (err: unknown) => err,
  );
  expect(failure).toBeInstanceOf(AuthError);
  return failure as AuthError;
}

test("an issuer with a path is compared with its trailing '/': the message names both and says they differ only by it", async () => {
  // openid-client compares URL hrefs: 'https://idp/realms/app/' and 'https://idp/realms/app' are two identifiers.
  const server = await listen();
  let named = '';
  server.handle((req, res) => {
    if (!(req.url ?? '').endsWith('/.well-known/openid-configuration')) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: named, authorization_endpoint: `${named}/auth`, token_endpoint: `${named}/token` }));
  });
  try {
    named = `${server.url}/realms/app`;
    const withSlash = await discoveryFailure({ issuer: `${server.url}/realms/app/` });
    expect(withSlash.code).toBe('discovery_failed');
    expect(withSlash.message).toBe(
      `The authorization server metadata (${server.url}/realms/app/.well-known/openid-configuration) could not be used: the metadata names another issuer ('${server.url}/realms/app') than the configured one ('${server.url}/realms/app/'). They differ only by a trailing '/', which counts for an issuer with a path: set \`issuer\` to '${server.url}/realms/app', exactly as the metadata writes it.`,
    );

    named = `${server.url}/realms/app/`;
    expect((await discoveryFailure({ issuer: `${server.url}/realms/app` })).message).toMatch(/differ only by a trailing '\/'.*set `issuer` to '[^']+\/realms\/app\/'/);

    named = `${server.url}/realms/other`;
    const other = await discoveryFailure({ issuer: `${server.url}/realms/app` });
    expect(other.message).toMatch(/names another issuer \('[^']+\/realms\/other'\) than the configured one \('[^']+\/realms\/app'\)\.$/);
  } finally {
    await server.close();
  }
});

test('an unreachable issuer: the message names the discovery URL of RFC 8414 too (oauth2)', async () => {
  const closed = await listen();
  await closed.close();
  const failure = await discoveryFailure({ issuer: `${closed.url}/tenant`, discovery: 'oauth2' });
  expect(failure.code).toBe('idp_unreachable');
  expect(failure.message).toBe(`The authorization server could not be reached for discovery (${closed.url}/.well-known/oauth-authorization-server/tenant).`);
});

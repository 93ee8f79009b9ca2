/**
 * Discovery (RFC 8414 §3.3, OIDC Discovery §4.3): the metadata must name the configured issuer and support what the
 * library needs; anything else is refused when the first login starts — before any authorization request, without a
 * session — and retried on the next login rather than cached (fail closed, recover without a restart).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import * as client from 'openid-client';
import { AuthError, type AuthOptions } from '../../lib/index.js';
import { checkSignature, createIssuerKeys } from '../../lib/keys.js';
import { resolveOptions } from '../../lib/options.js';
import { authorizationUrl } from '../../lib/par.js';
import { checkEndpoints } from '../../lib/endpoints.js';
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

// RFC 8414 §2 requires the member, but leaving it out says nothing against `code`: like an absent PKCE list, not refused.
test('metadata that does not list response_types_supported is used: a login starts', async () => {
  delete rogue.metadata.response_types_supported;
  const app = await startRogueStack({ rogue });
  try {
    const started = await app.browser.request(`${app.appUrl}/login`);
    expect(started.status).toBe(302);
    expect(new URL(started.headers.get('location')!).origin).toBe(rogue.issuer);
  } finally {
    rogue.reset();
    await app.close();
  }
});

test('metadata without the configured client authentication method is refused (no silent switch)', async () => {
  await refusedAtLogin((m) => (m.token_endpoint_auth_methods_supported = ['client_secret_post']), /client_secret_basic/);
});

// Each of these used to surface half-way through a login: a 500 with oauth4webapi's stack at /login, or a TypeError at
// the callback after the code had been redeemed. The value is not quoted; the field is named.
test.each([
  ['without an authorization_endpoint', (m: Record<string, unknown>) => delete m.authorization_endpoint, /authorization_endpoint is missing; browsers are sent there/],
  ['with an authorization_endpoint that is not a URL', (m: Record<string, unknown>) => (m.authorization_endpoint = 'idp.example/authorize'), /authorization_endpoint is not a URL/],
  ['with a javascript: authorization_endpoint', (m: Record<string, unknown>) => (m.authorization_endpoint = 'javascript:alert(1)'), /authorization_endpoint is not an https: URL/],
  ['with a token_endpoint that is not a string', (m: Record<string, unknown>) => (m.token_endpoint = ['https://idp.example/token']), /token_endpoint is not a URL/],
  ['with an ftp: token_endpoint', (m: Record<string, unknown>) => (m.token_endpoint = 'ftp://idp.example/token'), /token_endpoint is not an https: URL/],
  ['with a jwks_uri that is not a URL', (m: Record<string, unknown>) => (m.jwks_uri = 'not a url'), /jwks_uri is not a URL; ID-token signatures/],
  ['without a jwks_uri (scope has openid: no signature could be checked)', (m: Record<string, unknown>) => delete m.jwks_uri, /jwks_uri is missing; ID-token signatures/],
  [
    'requiring PAR at a pushed_authorization_request_endpoint that is not a URL',
    (m: Record<string, unknown>) => Object.assign(m, { require_pushed_authorization_requests: true, pushed_authorization_request_endpoint: '/par' }),
    /pushed_authorization_request_endpoint is not a URL/,
  ],
])('metadata %s is refused at discovery: 502 discovery_failed naming the field', async (_case, edit, detail) => {
  await refusedAtLogin(edit, detail);
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

test('an unreachable issuer without a path: the message names the RFC 8414 document at the root (oauth2)', async () => {
  const closed = await listen();
  await closed.close();
  const failure = await discoveryFailure({ issuer: closed.url, discovery: 'oauth2' });
  expect(failure.code).toBe('idp_unreachable');
  expect(failure.message).toBe(`The authorization server could not be reached for discovery (${closed.url}/.well-known/oauth-authorization-server).`);
});

/**
 * TLS (RFC 6749 §3.1, §3.2): under an https: issuer without allowInsecureRequests, an http: endpoint in its metadata
 * (a proxy that rewrites URLs, say) is refused at discovery. The test servers speak plain HTTP, so the checks are called
 * with such metadata directly.
 */
describe('an http: endpoint under an https: issuer (allowInsecureRequests off)', () => {
  const options = { issuer: 'https://idp.example.com', clientId: 'app', clientSecret: 'secret', redirectUri: 'https://app.example.com/callback' };
  const config = resolveOptions(options);
  const metadata = {
    issuer: 'https://idp.example.com',
    authorization_endpoint: 'https://idp.example.com/authorize',
    token_endpoint: 'https://idp.example.com/token',
    jwks_uri: 'https://idp.example.com/jwks',
  };
  const refusal = (err: unknown): AuthError => {
    expect(err).toBeInstanceOf(AuthError);
    return err as AuthError;
  };

  test('the metadata as it should be passes (control)', () => {
    expect(() => checkEndpoints(config, metadata)).not.toThrow();
  });

  test.each(['authorization_endpoint', 'token_endpoint', 'jwks_uri'])('an http: %s is refused: 502 discovery_failed naming it', (field) => {
    const err = refusal(captured(() => checkEndpoints(config, { ...metadata, [field]: `http://idp.example.com/${field}` })));

    expect([err.code, err.status]).toEqual(['discovery_failed', 502]);
    expect(err.message).toMatch(new RegExp(`metadata's ${field} uses http:`));
  });

  test('a server that requires PAR but names no PAR endpoint is refused, saying the server requires it', () => {
    const err = refusal(captured(() => checkEndpoints(config, { ...metadata, require_pushed_authorization_requests: true })));

    expect([err.code, err.status]).toEqual(['discovery_failed', 502]);
    expect(err.message).toBe(
      "The authorization server metadata's pushed_authorization_request_endpoint is missing; the server requires pushed authorization requests, which go there.",
    );
  });

  test('with allowInsecureRequests, an http: endpoint passes', () => {
    const insecure = resolveOptions({ issuer: 'http://idp.example.com', clientId: 'app', clientSecret: 'secret', redirectUri: 'http://127.0.0.1/callback', allowInsecureRequests: true });
    expect(() => checkEndpoints(insecure, { ...metadata, authorization_endpoint: 'http://idp.example.com/authorize' })).not.toThrow();
  });

  // Behind discovery's check, the places that use the endpoints answer too, rather than throwing oauth4webapi's or
  // URL's own errors (a 500 with a stack trace at /login, a TypeError at the callback after the code was redeemed).
  test.each([
    ['without PAR', { authorization_endpoint: 'http://idp.example.com/authorize' }, false],
    ['with PAR, at an http: PAR endpoint', { pushed_authorization_request_endpoint: 'http://idp.example.com/par' }, true],
    ['without an authorization_endpoint', { authorization_endpoint: undefined }, false],
  ])('the login URL %s is discovery_failed, not a stack trace', async (_case, edit, par) => {
    const configuration = new client.Configuration({ ...metadata, ...edit }, 'app');
    const used = par ? resolveOptions({ ...options, pushedAuthorizationRequests: true }) : config;
    const err = refusal(await authorizationUrl(used, configuration, { scope: 'openid' }, undefined).then(() => undefined, (e: unknown) => e));

    expect([err.code, err.status]).toEqual(['discovery_failed', 502]);
  });

  test.each([
    ['not a URL', 'not a url', /jwks_uri is not a URL/],
    ['http:', 'http://idp.example.com/jwks', /jwks_uri uses http:/],
  ])('a jwks_uri that is %s makes the signature check discovery_failed, not a TypeError', async (_case, jwksUri, message) => {
    const err = refusal(await checkSignature(createIssuerKeys(config), { jwks_uri: jwksUri }, 'a.b.c').then(() => undefined, (e: unknown) => e));

    expect([err.code, err.status]).toEqual(['discovery_failed', 502]);
    expect(err.message).toMatch(message);
  });
});

function captured(action: () => void): unknown {
  try {
    action();
    return undefined;
  } catch (err) {
    return err;
  }
}

// Discovery is bounded by httpTimeout like every other request: without it, openid-client's own 30 s default would
// hold every first login that long while the server does not answer.
test('a metadata request that is never answered times out after httpTimeout: 504 idp_unreachable', async () => {
  const silent = createServer((_req, res) => void setTimeout(() => res.destroy(), 4000));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = silent.address() as AddressInfo;
    const config = resolveOptions({ issuer: `http://127.0.0.1:${port}`, clientId: 'app', clientSecret: 'secret', redirectUri: 'http://127.0.0.1/callback', allowInsecureRequests: true, httpTimeout: 1000 });
    const started = Date.now();
    const err = await createServerResolver(config)().then(() => undefined, (e: unknown) => e);

    expect(err).toBeInstanceOf(AuthError);
    expect([(err as AuthError).code, (err as AuthError).status]).toEqual(['idp_unreachable', 504]);
    expect(Date.now() - started).toBeLessThan(3000);
  } finally {
    silent.closeAllConnections();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  }
});

test('metadata larger than 1 MiB (an answer without end) is not read whole: 502 discovery_failed, naming the limit', async () => {
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  let sent = 0;
  const endless = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"issuer":"');
    const pump = setInterval(() => {
      if (res.destroyed) return clearInterval(pump);
      sent += chunk.byteLength;
      res.write(chunk);
    }, 1);
  });
  await new Promise<void>((resolve) => endless.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = endless.address() as AddressInfo;
    const failure = await discoveryFailure({ issuer: `http://127.0.0.1:${port}`, httpTimeout: 10_000 });
    expect([failure.code, failure.status]).toEqual(['discovery_failed', 502]);
    expect(failure.message).toBe(
      `The authorization server metadata (http://127.0.0.1:${port}/.well-known/openid-configuration) is larger than 1 MiB and was not read: check that \`issuer\` names the authorization server.`,
    );
    // Cut off just past the limit, not read until the server stopped or the timeout ran out.
    expect(sent).toBeLessThan(16 * 1024 * 1024);
  } finally {
    endless.closeAllConnections();
    await new Promise<void>((resolve) => endless.close(() => resolve()));
  }
});

// checkDPoPSupport has tests of its own (providers/dpop); this one is that discovery runs it.
test('dpop on, and metadata listing DPoP proof algorithms without ES256, is refused at discovery: 502 discovery_failed', async () => {
  rogue.metadata.dpop_signing_alg_values_supported = ['PS256'];
  try {
    const failure = await discoveryFailure({ issuer: rogue.issuer, dpop: true });
    expect([failure.code, failure.status]).toEqual(['discovery_failed', 502]);
    expect(failure.message).toMatch(/does not accept ES256 DPoP proofs; it accepts: PS256/);
  } finally {
    rogue.reset();
  }
});

/**
 * Discovery (RFC 8414 §3.3, OIDC Discovery §4.3): the metadata must name the configured issuer and support what the
 * library needs; anything else is refused when the first login starts — before any authorization request, without a
 * session — and retried on the next login rather than cached (fail closed, recover without a restart).
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
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
  await refusedAtLogin((m) => (m.issuer = 'https://attacker.example'), /another issuer/);
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
    await expectRefusal(observed, () => app.browser.request(`${app.appUrl}/login`), { status: 502, code: 'idp_unreachable' });
  } finally {
    await app.close();
  }
});

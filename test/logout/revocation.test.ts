/**
 * revokeTokens / revokeUnused against a revocation endpoint that records what it is sent and answers as each test
 * says: the hints a server may rely on (RFC 7009 §2.1), the count of tokens it accepted, and that the best-effort
 * variant never rejects.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from '@jest/globals';
import { resolveOptions } from '../../lib/options.js';
import { revokeTokens, revokeUnused } from '../../lib/revocation.js';
import { createServerResolver } from '../../lib/server.js';
import { listen, type Listener } from '../helpers/app.js';

let endpoint: Listener;
let received: URLSearchParams[];
/** The status the endpoint answers for each token value; 200 when not listed. */
let statusFor: Record<string, number>;

beforeAll(async () => {
  endpoint = await listen();
  endpoint.handle((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const form = new URLSearchParams(body);
      received.push(form);
      res.statusCode = statusFor[form.get('token') ?? ''] ?? 200;
      res.setHeader('content-type', 'application/json');
      res.end(res.statusCode === 200 ? '{}' : '{"error":"temporarily_unavailable"}');
    });
  });
});
afterAll(async () => endpoint.close());
beforeEach(() => {
  received = [];
  statusFor = {};
});

async function configuration() {
  const config = resolveOptions({
    server: { authorizationEndpoint: `${endpoint.url}/authorize`, tokenEndpoint: `${endpoint.url}/token`, revocationEndpoint: `${endpoint.url}/revoke` },
    scope: 'read',
    clientId: 'app',
    clientSecret: 'secret',
    redirectUri: 'http://127.0.0.1/callback',
    allowInsecureRequests: true,
  });
  return createServerResolver(config)();
}

describe('revokeTokens', () => {
  test('each token goes with its own token_type_hint', async () => {
    await revokeTokens(await configuration(), { accessToken: 'the-access-token', refreshToken: 'the-refresh-token' });

    const hints = Object.fromEntries(received.map((form) => [form.get('token'), form.get('token_type_hint')]));
    expect(hints).toEqual({ 'the-refresh-token': 'refresh_token', 'the-access-token': 'access_token' });
  });

  test('resolves to the number of tokens the server accepted to revoke', async () => {
    const server = await configuration();
    statusFor = { 'the-access-token': 503 };
    expect(await revokeTokens(server, { accessToken: 'the-access-token', refreshToken: 'the-refresh-token' })).toBe(1);
    statusFor = {};
    expect(await revokeTokens(server, { accessToken: 'the-access-token', refreshToken: 'the-refresh-token' })).toBe(2);
    expect(await revokeTokens(server, { accessToken: 'the-access-token' })).toBe(1);
  });
});

describe('revokeUnused', () => {
  // Callers leave it running without awaiting it: a rejection would be an unhandled one.
  test('never rejects, even when the server configuration cannot be had', async () => {
    await expect(revokeUnused(Promise.reject(new Error('discovery failed')), { accessToken: 'a', refreshToken: 'r' })).resolves.toBeUndefined();
    expect(received).toEqual([]);
  });
});

/**
 * The refresh lock's lease, when its holder stalls. Two refreshers (two `auth()` runtimes, as in two processes) share
 * Redis; the token endpoint is a small server that rotates refresh tokens and, like a server with reuse detection,
 * kills the whole family when a spent one comes back. Stubbed because the stall must come at one exact point.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { resolveOptions, type ResolvedConfig } from '../../lib/options.js';
import { leaseMs } from '../../lib/refresh.js';
import { createRuntime, type Runtime } from '../../lib/runtime.js';
import type { LoginState } from '../../lib/session.js';
import { sessionCopy, type StoredTokens } from '../../lib/tokens.js';
import { connectRedis } from '../helpers/app.js';

const redis = connectRedis();
let server: Server;
let url: string;
/** Every refresh token presented, in order. */
const presented: string[] = [];
const live = new Set<string>();
let issued = 1;

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const refreshToken = new URLSearchParams(body).get('refresh_token') ?? '';
      presented.push(refreshToken);
      res.setHeader('content-type', 'application/json');
      if (!live.delete(refreshToken)) {
        live.clear();
        res.writeHead(400).end(JSON.stringify({ error: 'invalid_grant' }));
        return;
      }
      const next = `rt-${++issued}-${randomUUID()}`;
      live.add(next);
      res.writeHead(200).end(JSON.stringify({ access_token: `at-${issued}-${randomUUID()}`, token_type: 'Bearer', expires_in: 300, refresh_token: next }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  redis.disconnect();
});

function runtime(keyPrefix: string): Runtime {
  const config: ResolvedConfig = resolveOptions({
    server: { authorizationEndpoint: `${url}/authorize`, tokenEndpoint: `${url}/token` },
    clientId: 'app',
    clientSecret: 'lease-test-secret-not-for-production',
    redirectUri: 'http://127.0.0.1:1/callback',
    allowInsecureRequests: true,
    scope: 'api',
    redis,
    keyPrefix,
    httpTimeout: 1000,
  });
  return createRuntime(config);
}

test('a holder that stalled past its lease does not send the refresh token another holder has rotated since', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const [a, b] = [runtime(keyPrefix), runtime(keyPrefix)];
  const first = `rt-1-${randomUUID()}`;
  live.add(first);
  const tokens: StoredTokens = { accessToken: 'at-1', tokenType: 'Bearer', refreshToken: first, expiresAt: 1, lifetime: 300 };
  const login: LoginState = { id: randomUUID(), tokens: sessionCopy(tokens) };
  await a.tokenStore.create(login, tokens, 600);

  // A stalls on its re-read under the lock (a slow Redis, a blocked event loop) until its lease has run out.
  const read = a.tokenStore.read.bind(a.tokenStore);
  let reads = 0;
  a.tokenStore.read = async (id) => {
    const entry = await read(id);
    if (++reads === 2) await sleep(leaseMs(a.config) + 500);
    return entry;
  };
  const inA = a.refresher.current(login, { force: false, ttlSeconds: 600 });
  await sleep(200);
  const inB = b.refresher.current(login, { force: false, ttlSeconds: 600 });
  const [fromA, fromB] = await Promise.all([inA, inB]);

  // B took over once A's lease ran out and rotated the token; A then found its lock gone and took B's version.
  expect(presented.filter((token) => token === first)).toHaveLength(1);
  expect(fromA.v).toBe(2);
  expect(fromA.tokens.refreshToken).toBe(fromB.tokens.refreshToken);
  expect(live.has(String(fromB.tokens.refreshToken))).toBe(true);
}, 20_000);

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import express from 'express';
import session from 'express-session';
import request from 'supertest';
import { auth } from '../../lib/index.js';
import { buildApp, CLIENT_ID, CLIENT_SECRET, connectRedis, listen, startStack, type Listener, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';

describe('two apps sharing one Redis', () => {
  let stack: Stack;
  let second: Listener;
  beforeAll(async () => {
    second = await listen();
    stack = await startStack({ extraRedirectUris: [`${second.url}/callback`] });
    // Same sessions and same client, as two processes of one deployment behind a load balancer would be.
    second.handle(buildApp({ redis: stack.redis, sessionPrefix: stack.sessionPrefix, auth: { ...stack.authOptions } }));
  });
  afterAll(async () => {
    await second.close();
    await stack.close();
  });

  test('a login on one app is served by the other', async () => {
    const browser = new Browser();
    expect((await browser.login(`${stack.appUrl}/login?returnTo=/me`)).status).toBe(200);
    // Both apps are on 127.0.0.1, so the browser sends the same session cookie to the second one.
    const res = await browser.request(`${second.url}/me`, { headers: { accept: 'application/json' } });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).claims.sub).toBe('alice');
  });

  test('a login started on one app can finish on the other', async () => {
    const browser = new Browser();
    const started = await browser.login(`${stack.appUrl}/login?returnTo=/me`, { stopAtCallback: (u) => u.pathname === '/callback' });
    const callback = new URL(started.steps.at(-1)!.location!);
    // The callback reaches the second app (same path, its own origin and registered redirect URI would differ,
    // so here the first app's redirect URI is kept: the second app is configured identically).
    const finished = await browser.request(`${second.url}${callback.pathname}${callback.search}`);
    expect(finished.status).toBe(302);
    expect((await browser.request(`${stack.appUrl}/me`, { headers: { accept: 'application/json' } })).status).toBe(200);
  });
});

describe('discovery', () => {
  test('is lazy, and a failure is not cached: the next request retries', async () => {
    const idp = await listen();
    const app = await listen();
    const redis = connectRedis();
    try {
      // The issuer answers 503 at first, like a provider that is restarting.
      idp.handle((_req, res) => {
        res.statusCode = 503;
        res.end();
      });
      const authOptions = {
        issuer: idp.url.replace('127.0.0.1', 'localhost'),
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUri: `${app.url}/callback`,
        allowInsecureRequests: true,
        redis,
      };
      app.handle(buildApp({ redis, sessionPrefix: `test:discovery:${Date.now()}:`, auth: authOptions }));
      const browser = new Browser();
      browser.headers = { accept: 'application/json' };
      const first = await browser.request(`${app.url}/login`);
      expect(first.status).toBe(502);
      expect(JSON.parse(first.body)).toMatchObject({ error: 'discovery_failed' });

      // Now the real provider answers on the same address.
      const { default: Provider } = await import('oidc-provider');
      const homed = new Provider(authOptions.issuer, {
        clients: [{ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, redirect_uris: [`${app.url}/callback`] }],
        pkce: { required: () => true },
        features: { devInteractions: { enabled: true } },
        findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
      });
      idp.handle(homed.callback());
      const second = await browser.login(`${app.url}/login?returnTo=/me`);
      expect(second.status).toBe(200);
      expect(JSON.parse(second.body).claims.sub).toBe('alice');
    } finally {
      await app.close();
      await idp.close();
      redis.disconnect();
    }
  });
});

describe('misconfiguration', () => {
  test('a request without express-session gets a clear error naming express-session, not a stack trace', async () => {
    const app = express();
    app.use(auth({ issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback' }));
    app.get('/', (_req, res) => res.send('unreachable'));
    const res = await request(app).get('/').set('accept', 'application/json');
    expect(res.status).toBe(500);
    expect(res.body).toMatchObject({ error: 'session_missing' });
    expect(res.body.error_description).toContain('express-session');
    expect(JSON.stringify(res.body)).not.toMatch(/at .*\.(ts|js):\d+/);
  });

  test("a request outside express-session's cookie.path (which gets no session) is told so, not only that express-session is missing", async () => {
    const app = express();
    app.use(session({ secret: 'x'.repeat(32), resave: false, saveUninitialized: false, cookie: { path: '/app' } }));
    app.use(auth({ issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/app/callback' }));
    app.get('/health', (_req, res) => res.send('unreachable'));
    const res = await request(app).get('/health').set('accept', 'application/json');
    expect(res.status).toBe(500);
    expect(res.body).toMatchObject({ error: 'session_missing' });
    expect(res.body.error_description).toContain("cookie.path does not cover this request's path");
  });
});

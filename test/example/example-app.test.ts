/**
 * The example app's own parts that the browser test does not reach: configuration from the environment, the
 * session-store fallback, and HTML escaping.
 */
import { expect, test } from '@jest/globals';
import { readConfig } from '../../example-app/config.js';
import { memoryStoreWarning, openSessionBackend } from '../../example-app/session-store.js';
import { html, profilePage } from '../../example-app/views.js';

test('no ISSUER: embedded defaults (dev server, port 3000, 30 s access tokens)', () => {
  expect(readConfig({})).toMatchObject({ mode: 'dev', port: 3000, host: '127.0.0.1', accessTokenTtl: 30, redisUrl: undefined });
  expect(readConfig({ PORT: '0', DEV_ACCESS_TOKEN_TTL: '3', REDIS_URL: 'redis://r:6379' })).toMatchObject({
    mode: 'dev',
    port: 0,
    accessTokenTtl: 3,
    redisUrl: 'redis://r:6379',
  });
});

test('ISSUER: a real provider, configured by environment variables only', () => {
  const config = readConfig({
    ISSUER: 'https://idp.example.com',
    CLIENT_ID: 'app',
    CLIENT_SECRET: 's3cret',
    REDIRECT_URI: 'https://app.example.com/callback',
    SESSION_SECRET: 'x'.repeat(32),
    API_AUDIENCE: 'https://api.example.com',
  });
  expect(config).toMatchObject({
    mode: 'provider',
    issuer: 'https://idp.example.com',
    clientId: 'app',
    clientSecret: 's3cret',
    redirectUri: 'https://app.example.com/callback',
    scope: 'openid profile email',
    apiAudience: 'https://api.example.com',
  });
  expect(readConfig({ ISSUER: 'https://idp.example.com', CLIENT_ID: 'app', PORT: '4000' })).toMatchObject({
    redirectUri: 'http://localhost:4000/callback',
    clientSecret: undefined,
  });
  // The app listens where the callback points unless PORT says otherwise (behind a proxy).
  expect(readConfig({ ISSUER: 'https://idp.example.com', CLIENT_ID: 'app', REDIRECT_URI: 'http://localhost:3999/callback' })).toMatchObject({ port: 3999 });
  expect(readConfig({ ISSUER: 'https://idp.example.com', CLIENT_ID: 'app', REDIRECT_URI: 'https://app.example.com/callback' })).toMatchObject({ port: 3000 });
});

test('configuration mistakes stop the app with a message that names the fix', () => {
  expect(() => readConfig({ CLIENT_ID: 'app' })).toThrow(/CLIENT_ID is set but ISSUER is not/);
  expect(() => readConfig({ ISSUER: 'https://idp.example.com' })).toThrow(/CLIENT_ID is required/);
  expect(() => readConfig({ ISSUER: 'idp.example.com', CLIENT_ID: 'app' })).toThrow(/ISSUER must be an absolute URL/);
  expect(() => readConfig({ PORT: 'eighty' })).toThrow(/PORT must be a whole number/);
  expect(() => readConfig({ DEV_ACCESS_TOKEN_TTL: '0' })).toThrow(/DEV_ACCESS_TOKEN_TTL/);
  // An ID token's audience is the client id: an API accepting that audience would take ID tokens as access tokens.
  expect(() => readConfig({ ISSUER: 'https://idp.example.com', CLIENT_ID: 'app', API_AUDIENCE: 'app' })).toThrow(/API_AUDIENCE must not equal CLIENT_ID/);
});

test('sessions go to Redis when it answers, else to memory with a loud warning that hides the password', async () => {
  const redis = await openSessionBackend({ url: process.env.REDIS_URL, prefix: 'test:example:sess:' });
  try {
    expect(redis.kind).toBe('redis');
  } finally {
    await redis.close();
  }

  // Port 1 on loopback: nothing listens there.
  const memory = await openSessionBackend({ url: 'redis://:hunter2@127.0.0.1:1', prefix: 'test:example:sess:' });
  expect(memory.kind).toBe('memory');
  if (memory.kind !== 'memory') return;
  expect(memory.reason).not.toBe('');
  const warning = memoryStoreWarning(memory.url, memory.reason);
  expect(warning).toMatch(/sessions are kept in MEMORY/);
  expect(warning).toContain('redis://:***@127.0.0.1:1');
  expect(warning).not.toContain('hunter2');
});

test('pages escape every value they show', () => {
  const evil = '<img src=x onerror="alert(1)">';
  expect(html`<p title="${evil}">${evil}</p>`.value).toBe(
    '<p title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;">&lt;img src=x onerror=&quot;alert(1)&quot;&gt;</p>',
  );
  const page = profilePage(
    { claims: { sub: 'u', name: evil, [evil]: evil }, expiresAt: 2_000_000_000, scope: evil, tokenType: 'Bearer', now: 1_999_999_990 },
    { name: evil },
  );
  expect(page).not.toContain('<img');
  expect(page).toContain('&lt;img src=x onerror=&quot;alert(1)&quot;&gt;');
});

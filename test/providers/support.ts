import { randomUUID } from 'node:crypto';
import type { Server, ServerResponse } from 'node:http';
import type { Express } from 'express';
import type { Redis } from 'ioredis';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import type { AuthOptions } from '../../lib/index.js';
import { buildApp, listen, type Listener } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startProvider, type TestProvider, type TestProviderOptions } from '../helpers/provider.js';

/** Requests a server received, as `METHOD /path`, for assertions on what the library called. */
export function recordRequests(server: Server): string[] {
  const seen: string[] = [];
  server.prependListener('request', (req) => {
    seen.push(`${req.method ?? ''} ${new URL(req.url ?? '/', 'http://recorder').pathname}`);
  });
  return seen;
}

/** An app listening before the provider exists, so that its callback URL can be registered with a client. */
export interface AppSlot {
  readonly listener: Listener;
  readonly url: string;
  readonly redirectUri: string;
  readonly browser: Browser;
  readonly sessionPrefix: string;
  /** Mounts the app (buildApp from the shared helpers) with these auth options. */
  mount(redis: Redis, auth: AuthOptions, routes?: (app: Express) => void): Express;
}

export async function appSlot(): Promise<AppSlot> {
  const listener = await listen();
  const sessionPrefix = `test:${randomUUID()}:sess:`;
  return {
    listener,
    url: listener.url,
    redirectUri: `${listener.url}/callback`,
    browser: new Browser(),
    sessionPrefix,
    mount(redis, auth, routes) {
      const app = buildApp({ redis, sessionPrefix, auth, ...(routes ? { routes } : {}) });
      listener.handle(app);
      return app;
    },
  };
}

/** A fresh key pair for private_key_jwt: the private JWK for the app, the public one for the client's `jwks`. */
export async function clientKeyPair(alg: 'RS256' | 'ES256' | 'EdDSA', kid: string): Promise<{ privateJwk: JWK; publicJwk: JWK; privateKey: CryptoKey }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return {
    privateJwk: { ...(await exportJWK(privateKey)), kid },
    publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' },
    privateKey,
  };
}

/** Every stored session (JSON) under a prefix. */
export async function storedSessions(redis: Redis, prefix: string): Promise<Array<Record<string, unknown>>> {
  const keys = await redis.keys(`${prefix}*`);
  const values = await Promise.all(keys.map((key) => redis.get(key)));
  return values.flatMap((value) => (value === null ? [] : [JSON.parse(value) as Record<string, unknown>]));
}

/** Deletes every stored session under a prefix (tests that assert "no login was stored" start from none). */
export async function clearSessions(redis: Redis, prefix: string): Promise<void> {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
}

/** A deep copy made of this realm's objects (JSON-like values only, which is all client metadata holds). */
function realmClone<T>(value: T): T {
  if (Array.isArray(value)) return value.map(realmClone) as T;
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, realmClone(v)])) as T;
  }
  return value;
}

/**
 * startProvider for clients with a `jwks`. oidc-provider copies static clients with `structuredClone`, which jest's
 * node environment takes from the outer realm, and then checks `jwk.constructor === Object` with the sandbox's
 * Object: every client key set would look invalid. Only under jest; the copy is swapped for the constructor call only.
 */
export async function startProviderWithClientKeys(options: TestProviderOptions): Promise<TestProvider> {
  const original = globalThis.structuredClone;
  globalThis.structuredClone = realmClone as typeof structuredClone;
  try {
    return await startProvider(options);
  } finally {
    globalThis.structuredClone = original;
  }
}

/** A route that says who is logged in: `{ isAuthenticated, sub }`. */
export function whoami(app: Express): void {
  app.get('/whoami', (req, res) => res.json({ isAuthenticated: req.auth.isAuthenticated, sub: req.auth.claims?.sub ?? null }));
}

/**
 * A plain-OAuth server that misbehaves on purpose: its authorization endpoint answers at once with a fresh code (no
 * `iss`, no metadata), and every POST to its token endpoint (or to `/par`, for a PAR endpoint) goes to `onToken` with the
 * parsed form and the path.
 */
export async function startStubServer(onToken: (form: URLSearchParams, res: ServerResponse, path: string) => void): Promise<Listener> {
  const stub = await listen();
  stub.handle((req, res) => {
    const url = new URL(req.url ?? '/', stub.url);
    if (req.method === 'GET' && url.pathname === '/authorize') {
      const back = new URL(url.searchParams.get('redirect_uri') ?? '');
      back.searchParams.set('code', `stub-code-${randomUUID()}`);
      back.searchParams.set('state', url.searchParams.get('state') ?? '');
      res.writeHead(302, { location: back.href }).end();
      return;
    }
    if (req.method === 'POST' && (url.pathname === '/token' || url.pathname === '/par')) {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => onToken(new URLSearchParams(body), res, url.pathname));
      return;
    }
    res.writeHead(404).end();
  });
  return stub;
}

/** The auth options of an app using {@link startStubServer}'s server, as a plain-OAuth (GitHub-like) client. */
export function stubClientOptions(stub: Listener, app: AppSlot, redis: Redis): AuthOptions {
  return {
    server: { authorizationEndpoint: `${stub.url}/authorize`, tokenEndpoint: `${stub.url}/token` },
    clientId: 'stub-client',
    clientSecret: 'stub-secret-not-for-production',
    clientAuthMethod: 'client_secret_post',
    redirectUri: app.redirectUri,
    scope: 'repo read:user',
    allowInsecureRequests: true,
    redis,
    keyPrefix: `test:${randomUUID()}:`,
  };
}

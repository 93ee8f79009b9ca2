import { randomUUID } from 'node:crypto';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RedisStore } from 'connect-redis';
import express, { type Express } from 'express';
import session, { type SessionOptions } from 'express-session';
import { Redis, type RedisOptions } from 'ioredis';
import type { ClientMetadata } from 'oidc-provider';
import { auth, requireAuth, type AuthOptions } from '../../lib/index.js';
import { Browser } from './browser.js';
import { startProvider, type TestProvider, type TestProviderOptions } from './provider.js';

/** A connection to the tests' Redis (the private one from global setup, or REDIS_URL). */
export function connectRedis(redis: StackRedis = {}): Redis {
  return new Redis(redis.url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 1, ...redis.options });
}

/** Another Redis than the tests' shared one (a private server a test stops), or other ioredis options. */
export interface StackRedis {
  url?: string;
  options?: RedisOptions;
}

/** An HTTP server listening on an ephemeral port before its handler exists (the provider needs its URL first). */
export interface Listener {
  readonly server: Server;
  readonly url: string;
  handle(handler: RequestListener): void;
  close(): Promise<void>;
}

export async function listen(): Promise<Listener> {
  let handler: RequestListener = (_req, res) => {
    res.statusCode = 503;
    res.end('not ready');
  };
  const server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    handle: (h) => (handler = h),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface AppOptions {
  redis: Redis;
  /** Session key prefix in Redis; apps that share it share sessions. */
  sessionPrefix: string;
  auth: AuthOptions;
  session?: Partial<SessionOptions>;
  /** Adds routes after auth(). */
  routes?: (app: Express) => void;
  /** Adds routes between express-session and auth(): their requests never pass through auth(). */
  routesBeforeAuth?: (app: Express) => void;
}

export const SESSION_SECRET = 'test-session-secret-not-for-production';

/** An app as a user of the library would write it, plus a few routes the tests read. */
export function buildApp(options: AppOptions): Express {
  const app = express();
  app.use(
    session({
      store: new RedisStore({ client: options.redis, prefix: options.sessionPrefix }),
      secret: SESSION_SECRET,
      resave: false,
      saveUninitialized: false,
      ...options.session,
    }),
  );
  options.routesBeforeAuth?.(app);
  app.use(auth(options.auth));
  app.get('/', (req, res) => {
    res.type('text').send(req.auth.isAuthenticated ? `hello ${String(req.auth.claims?.sub)}` : 'hello anonymous');
  });
  app.get('/me', requireAuth(), (req, res) => {
    res.json({ claims: req.auth.claims, tokens: { expiresAt: req.auth.tokens?.expiresAt, tokenType: req.auth.tokens?.tokenType } });
  });
  app.get('/token', requireAuth(), async (req, res, next) => {
    try {
      res.json({ accessToken: await req.auth.getAccessToken() });
    } catch (err) {
      next(err);
    }
  });
  options.routes?.(app);
  return app;
}

/** A real provider and an app wired to it. */
export interface Stack extends MountedApp {
  provider: TestProvider;
  /** Stops the app and the provider and closes the Redis connection. */
  close(): Promise<void>;
}

export interface StackOptions {
  /** Overrides for the auth options (issuer, clientId, redirectUri are filled in). */
  auth?: Partial<AuthOptions>;
  client?: Partial<ClientMetadata>;
  provider?: Omit<TestProviderOptions, 'clients'>;
  session?: Partial<SessionOptions>;
  routes?: (app: Express) => void;
  /** Extra listeners whose callback URLs must be registered too (for multi-app tests). */
  extraRedirectUris?: string[];
  redis?: StackRedis;
}

export const CLIENT_ID = 'test-app';
export const CLIENT_SECRET = 'test-client-secret-not-for-production';

/** Provider + app + Redis, wired as a deployment would be. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const listener = await listen();
  const redirectUri = `${listener.url}/callback`;
  const provider = await startProvider({
    ...options.provider,
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [redirectUri, ...(options.extraRedirectUris ?? [])],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
        ...options.client,
      },
    ],
  });
  const mounted = mountApp(listener, provider.issuer, options);
  return {
    provider,
    ...mounted,
    async close() {
      await listener.close();
      await provider.close();
      mounted.redis.disconnect();
    },
  };
}

/** What {@link mountApp} wires up: an app on `listener`, its Redis, its options and a fresh browser. */
export interface MountedApp {
  app: Express;
  appUrl: string;
  listener: Listener;
  redis: Redis;
  sessionPrefix: string;
  authOptions: AuthOptions;
  browser: Browser;
}

/** Builds the test app for `issuer` on `listener`, with a fresh Redis connection and per-test key prefixes. */
export function mountApp(
  listener: Listener,
  issuer: string,
  options: { auth?: Partial<AuthOptions>; session?: Partial<SessionOptions>; routes?: (app: Express) => void; redis?: StackRedis },
): MountedApp {
  const redis = connectRedis(options.redis);
  const sessionPrefix = `test:${randomUUID()}:sess:`;
  const authOptions: AuthOptions = {
    issuer,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    redirectUri: `${listener.url}/callback`,
    allowInsecureRequests: true,
    scope: 'openid email',
    redis,
    keyPrefix: `test:${randomUUID()}:`,
    ...options.auth,
  };
  const app = buildApp({
    redis,
    sessionPrefix,
    auth: authOptions,
    ...(options.session ? { session: options.session } : {}),
    ...(options.routes ? { routes: options.routes } : {}),
  });
  listener.handle(app);
  return { app, appUrl: listener.url, listener, redis, sessionPrefix, authOptions, browser: new Browser() };
}

/** The session cookie's value for the app's host. */
export function sessionCookie(browser: Browser, appUrl: string, name = 'connect.sid'): string | undefined {
  return browser.cookie(new URL(appUrl).hostname, name)?.value;
}

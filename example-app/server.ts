/**
 * `npm start`: the example app, its protected API and (without ISSUER) the embedded dev authorization server.
 * Configuration: environment variables only, see example-app/README.md.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AuthOptions } from 'express-oauth-pkce';
import { createApp } from './app.js';
import { ConfigError, readConfig, type ExampleConfig } from './config.js';
import { createResourceServer } from './resource-server.js';
import { memoryStoreWarning, openSessionBackend, redactUrl, type SessionBackend } from './session-store.js';

interface Listening {
  server: Server;
  port: number;
  handle(listener: RequestListener): void;
  close(): Promise<void>;
}

/** Listens before the handler exists: the dev server must know the app's URL, and the app the server's. */
async function listen(port: number, host: string): Promise<Listening> {
  let handler: RequestListener = (_req, res) => {
    res.statusCode = 503;
    res.end('starting');
  };
  const server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    handle: (h) => (handler = h),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function isLoopbackHttp(url: string): boolean {
  const { protocol, hostname } = new URL(url);
  return protocol === 'http:' && (hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname));
}

function loopbackName(host: string): string {
  return host === '127.0.0.1' || host === '::1' || host === '0.0.0.0' || host === '::' ? 'localhost' : host;
}

async function main(config: ExampleConfig): Promise<() => Promise<void>> {
  const closers: Array<() => Promise<void>> = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch(() => {});
  };
  try {
    const sessions: SessionBackend = await openSessionBackend({ url: config.redisUrl, prefix: 'example-app:sess:' });
    closers.push(sessions.close);

    let web: Listening;
    try {
      web = await listen(config.port, config.host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ConfigError(
        code === 'EADDRINUSE' ? `port ${config.port} is in use: set PORT to another one (PORT=0 picks a free port).` : `cannot listen on ${config.host}:${config.port}: ${String(err)}`,
      );
    }
    closers.push(web.close);
    const api = await listen(0, '127.0.0.1');
    closers.push(api.close);
    const apiOrigin = `http://127.0.0.1:${api.port}`;

    let appUrl: string;
    let authOptions: AuthOptions;
    const about: string[] = [];
    if (config.mode === 'dev') {
      appUrl = `http://${loopbackName(config.host)}:${web.port}`;
      const redirectUri = `${appUrl}/callback`;
      // Loaded only here: oidc-provider is a development dependency, not needed with a real provider.
      const { API_SCOPE, DEMO_USER, startDevProvider } = await import('./dev-provider.js');
      const dev = await startDevProvider({ redirectUri, apiAudience: apiOrigin, accessTokenTtl: config.accessTokenTtl });
      closers.push(dev.close);
      api.handle(createResourceServer({ issuer: dev.issuer, audience: apiOrigin, requiredScope: API_SCOPE, requireAtJwtType: true }));
      authOptions = {
        issuer: dev.issuer,
        clientId: dev.clientId,
        clientSecret: dev.clientSecret,
        redirectUri,
        scope: `openid profile email ${API_SCOPE}`,
        // The dev server is plain http on loopback.
        allowInsecureRequests: true,
      };
      about.push(
        `  Dev authorization server  ${dev.issuer}  (demo user: ${DEMO_USER.login} / ${DEMO_USER.password})`,
        `  Access tokens live ${config.accessTokenTtl} s, so you can watch them being refreshed.`,
      );
    } else {
      appUrl = new URL(config.redirectUri).origin;
      api.handle(createResourceServer({ issuer: config.issuer, audience: config.apiAudience, requireAtJwtType: false }));
      authOptions = {
        issuer: config.issuer,
        clientId: config.clientId,
        // Without CLIENT_SECRET the client is public: leave the option out (auth() refuses an undefined secret).
        ...(config.clientSecret === undefined ? {} : { clientSecret: config.clientSecret }),
        redirectUri: config.redirectUri,
        scope: config.scope,
        ...(config.apiAudience ? { authorizationParams: { resource: config.apiAudience } } : {}),
        // A provider on this machine (Keycloak in a container, say) may be plain http; anything else must be https.
        allowInsecureRequests: isLoopbackHttp(config.issuer),
      };
      about.push(`  Provider                  ${config.issuer}`, `  Callback                  ${config.redirectUri}`);
    }
    if (sessions.redis) authOptions.redis = sessions.redis;

    web.handle(
      createApp({
        auth: authOptions,
        sessionStore: sessions.store,
        sessionSecret: config.sessionSecret ?? randomBytes(32).toString('base64url'),
        apiUrl: `${apiOrigin}/hello`,
        // `issuer` is optional since servers can be given by hand (`server`); this app always discovers one.
        formTargets: authOptions.issuer === undefined ? [] : [new URL(authOptions.issuer).origin],
      }),
    );

    const out: string[] = ['', 'express-oauth-pkce example app', '', `  Open ${appUrl}`, '', ...about];
    out.push(
      `  Protected API             ${apiOrigin}/hello`,
      `  Sessions                  ${sessions.kind === 'redis' ? `Redis at ${redactUrl(sessions.url)}` : 'in memory (see the warning)'}`,
      '',
    );
    if (sessions.kind === 'memory') console.warn(`\n${memoryStoreWarning(sessions.url, sessions.reason)}`);
    if (config.sessionSecret === undefined && config.mode === 'provider') {
      console.warn('SESSION_SECRET is not set: using a random one, so sessions end when the app restarts.');
    }
    console.log(out.join('\n'));
    return closeAll;
  } catch (err) {
    await closeAll();
    throw err;
  }
}

let config: ExampleConfig;
try {
  config = readConfig(process.env);
} catch (err) {
  console.error(`example-app: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}

main(config).then(
  (close) => {
    let closing = false;
    const stop = (signal: NodeJS.Signals) => {
      if (closing) return;
      closing = true;
      console.log(`\n${signal}: stopping.`);
      void close().then(() => process.exit(0));
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  },
  (err: unknown) => {
    console.error(`example-app: ${err instanceof ConfigError ? err.message : err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    process.exit(1);
  },
);

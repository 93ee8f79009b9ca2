/**
 * express-openid-connect 3.x, configured for the same flow as the library (authorization code + PKCE, query
 * response mode, scope `openid email`), with its default encrypted-cookie session or a connect-redis store.
 */
import type { RequestListener } from 'node:http';
import { RedisStore } from 'connect-redis';
import eoc, { type ConfigParams } from 'express-openid-connect';
import type { Redis } from 'ioredis';
import { benchApp, connect, renderError } from './common.js';
import type { AppConfig } from './protocol.js';

// A CommonJS package whose named exports Node's ESM loader cannot detect: take them from the default export.
const { auth, requiresAuth } = eoc;

export async function build(config: AppConfig, mode: 'cookie' | 'redis'): Promise<{ handler: RequestListener; close(): Promise<void> }> {
  let redis: Redis | undefined;
  const session: ConfigParams['session'] = {};
  if (mode === 'redis') {
    redis = connect(config);
    // connect-redis implements express-session's Store, which is what express-openid-connect documents for `store`.
    session.store = new RedisStore({ client: redis, prefix: config.sessionPrefix }) as unknown as NonNullable<ConfigParams['session']>['store'];
  }
  const app = benchApp();
  app.use(
    auth({
      issuerBaseURL: config.issuer,
      baseURL: config.appUrl,
      clientID: config.clientId,
      clientSecret: config.clientSecret,
      secret: 'bench-eoc-secret-not-for-production-0123456789',
      authRequired: false,
      idpLogout: false,
      authorizationParams: { response_type: 'code', response_mode: 'query', scope: 'openid email' },
      session,
    }),
  );
  app.get('/me', requiresAuth(), (req, res) => {
    res.json(req.oidc.user);
  });
  app.use(renderError);
  return { handler: app, close: async () => void (await redis?.quit()) };
}

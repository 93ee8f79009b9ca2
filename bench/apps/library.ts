/** The contender under test: express-session + connect-redis + this library, as its README tells users to wire it. */
import type { RequestListener } from 'node:http';
import { benchApp, connect, fingerprint, importLibrary, redisSession, renderError } from './common.js';
import type { AppConfig } from './protocol.js';

export async function build(config: AppConfig): Promise<{ handler: RequestListener; close(): Promise<void> }> {
  const { auth, requireAuth } = await importLibrary();
  const redis = connect(config);
  const app = benchApp();
  app.use(redisSession(config, redis));
  app.use(
    auth({
      issuer: config.issuer,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
      redirectUri: `${config.appUrl}/callback`,
      allowInsecureRequests: true,
      scope: 'openid email',
      redis,
      keyPrefix: config.keyPrefix,
    }),
  );
  // Case 1: the route every contender implements.
  app.get('/me', requireAuth(), (req, res) => {
    res.json(req.auth.claims);
  });
  // Case 3: the refresh storm, through the public API only.
  app.get('/token', requireAuth(), async (req, res, next) => {
    try {
      res.json({ token: fingerprint(await req.auth.getAccessToken()) });
    } catch (err) {
      next(err);
    }
  });
  app.use(renderError);
  return { handler: app, close: async () => void (await redis.quit()) };
}

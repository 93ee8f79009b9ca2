/**
 * The floor: express-session + connect-redis on ioredis and nothing else, the cheapest way to serve a logged-in
 * user from a Redis session. Its bench-only login stores the claims the library serves, so both answer the same JSON.
 */
import type { RequestListener } from 'node:http';
import express, { type RequestHandler } from 'express';
import { benchApp, connect, redisSession, renderError } from './common.js';
import type { AppConfig } from './protocol.js';

declare module 'express-session' {
  interface SessionData {
    user?: Record<string, unknown>;
  }
}

/**
 * With `layers` (the `floor-layers` reference of the paired case): one pass-through middleware after the session and
 * one pass-through guard on the route, the layers a middleware-plus-guard library adds, doing nothing else. With
 * `fetchFirst` (`floor-fetch`): one `fetch()` of the provider's discovery document before anything else, which loads
 * Node's fetch (undici) into the process the way openid-client's first call does in the library's (bench/FIXES.md §7).
 */
export async function build(
  config: AppConfig,
  options: { layers?: boolean; fetchFirst?: boolean } = {},
): Promise<{ handler: RequestListener; close(): Promise<void> }> {
  if (options.fetchFirst === true) await (await fetch(`${config.issuer}/.well-known/openid-configuration`)).text();
  const redis = connect(config);
  const app = benchApp();
  app.use(redisSession(config, redis));
  const guards: RequestHandler[] = [];
  if (options.layers === true) {
    app.use(function passThrough(_req, _res, next) {
      next();
    });
    guards.push(function passThroughGuard(_req, _res, next) {
      next();
    });
  }
  app.post('/login', express.json(), (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.user = req.body as Record<string, unknown>;
      req.session.save((saveErr) => (saveErr ? next(saveErr) : res.redirect(303, '/me')));
    });
  });
  app.get('/me', ...guards, (req, res) => {
    if (req.session.user === undefined) {
      res.status(401).json({ error: 'unauthorized' });
      return;
    }
    res.json(req.session.user);
  });
  app.use(renderError);
  return { handler: app, close: async () => void (await redis.quit()) };
}

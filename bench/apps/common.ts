import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { pathToFileURL } from 'node:url';
import { RedisStore } from 'connect-redis';
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import session from 'express-session';
import { Redis } from 'ioredis';
import { BENCH_SESSION_SECRET, type AppConfig } from './protocol.js';

/**
 * An Express app with the bench-only endpoint mounted before anything else, so that reading the CPU counter never
 * touches a session or Redis.
 */
export function benchApp(): Express {
  const app = express();
  app.get('/__bench/cpu', (_req, res) => {
    const { user, system } = process.cpuUsage();
    res.json({ user, system });
  });
  // Only with BENCH_CPU_PROF=1: V8's CPU profiler over a window the orchestrator chooses (the measured load, not
  // the start-up), written where the orchestrator says.
  if (process.env.BENCH_CPU_PROF === '1') {
    let inspector: Session | undefined;
    app.post('/__bench/profile/start', async (_req, res) => {
      inspector = new Session();
      inspector.connect();
      await inspector.post('Profiler.enable');
      await inspector.post('Profiler.start');
      res.end();
    });
    app.post('/__bench/profile/stop', express.text(), async (req, res) => {
      if (inspector === undefined) return void res.status(409).end();
      const { profile } = await inspector.post('Profiler.stop');
      inspector.disconnect();
      inspector = undefined;
      writeFileSync(String(req.body), JSON.stringify(profile));
      res.end();
    });
  }
  return app;
}

/**
 * The library under test: `lib/`, or with `BENCH_LIB=/path/to/index.(ts|js)` another copy of it (before/after
 * comparisons; see bench/README.md). The in-process case and the library's app processes both load it from here.
 */
export async function importLibrary(): Promise<typeof import('../../lib/index.js')> {
  const path = process.env.BENCH_LIB;
  return (await import(path === undefined ? '../../lib/index.js' : pathToFileURL(path).href)) as typeof import('../../lib/index.js');
}

export function connect(config: AppConfig): Redis {
  return new Redis(config.redisUrl, { maxRetriesPerRequest: 1 });
}

/**
 * The express-session setup of the floor and the library: one definition, so that the two contenders always compare
 * the same session middleware and store.
 */
export function redisSession(config: AppConfig, redis: Redis): RequestHandler {
  return session({
    store: new RedisStore({ client: redis, prefix: config.sessionPrefix }),
    secret: BENCH_SESSION_SECRET,
    resave: false,
    saveUninitialized: false,
  });
}

/** Status and a stable code only: a bench app must never print a token or a stack. */
export const renderError: ErrorRequestHandler = (err, _req, res, _next) => {
  const status = typeof err?.status === 'number' ? err.status : 500;
  const code = typeof err?.code === 'string' ? err.code : 'error';
  res.status(status).json({ error: code });
};

/** A short fingerprint, so that the storm can tell tokens apart without any token leaving the app. */
export function fingerprint(token: string): string {
  return createHash('sha256').update(token).digest('base64url').slice(0, 16);
}

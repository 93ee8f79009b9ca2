import { createHash } from 'node:crypto';
import express, { type ErrorRequestHandler, type Express } from 'express';
import { Redis } from 'ioredis';
import type { AppConfig } from './protocol.js';

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
  return app;
}

export function connect(config: AppConfig): Redis {
  return new Redis(config.redisUrl, { maxRetriesPerRequest: 1 });
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

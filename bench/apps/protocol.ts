/** Messages between the bench orchestrator and an app process (over the child-process IPC channel). */
import { createHmac } from 'node:crypto';

export type Contender = 'library' | 'floor' | 'eoc-cookie' | 'eoc-redis';

/**
 * Apps that are not contenders but take the floor apart: `floor-layers` (the paired case) is the floor plus one
 * pass-through middleware mounted with `app.use()` and one pass-through guard on the route, the structure every
 * middleware-plus-guard library adds (`app.use(auth())`, `requireAuth()`); `floor-fetch` (for `npm run bench:ab`) is
 * the floor that made one `fetch()` to the provider before serving, as openid-client does at every login;
 * `floor-import` (for `npm run bench:ab`) is the floor in a process that imported the library without mounting it, or
 * the modules named in `BENCH_IMPORT` instead.
 */
export type Reference = 'floor-layers' | 'floor-fetch' | 'floor-import';

export type AppKind = Contender | Reference;

/** What an app process needs to build its app; sent once its port is known (the provider needs that first). */
export interface AppConfig {
  /** The app's own origin, `http://127.0.0.1:PORT`. */
  appUrl: string;
  issuer: string;
  clientId: string;
  clientSecret: string;
  redisUrl: string;
  /** connect-redis key prefix: processes that share it share sessions. */
  sessionPrefix: string;
  /** The library's `keyPrefix`. */
  keyPrefix: string;
}

export type ToApp = { type: 'configure'; config: AppConfig } | { type: 'shutdown' };

export type FromApp = { type: 'listening'; port: number } | { type: 'ready' } | { type: 'failed'; message: string };

/** Same cookie secret everywhere, so that two library processes read each other's sessions. */
export const BENCH_SESSION_SECRET = 'bench-session-secret-not-for-production';

/**
 * The `Cookie` header express-session accepts for a session id: `connect.sid=` and, URL-encoded, `s:` + id + `.` +
 * HMAC-SHA256 of the id in base64 without padding. For sessions the bench writes into a store directly.
 */
export function sessionCookie(sessionId: string, secret: string): string {
  const signature = createHmac('sha256', secret).update(sessionId).digest('base64').replace(/=+$/, '');
  return `connect.sid=${encodeURIComponent(`s:${sessionId}.${signature}`)}`;
}

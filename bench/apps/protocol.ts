/** Messages between the bench orchestrator and an app process (over the child-process IPC channel). */

export type Contender = 'library' | 'floor' | 'eoc-cookie' | 'eoc-redis';

/**
 * Apps that are not contenders but take the floor apart, for the paired case: `floor-layers` is the floor plus one
 * pass-through middleware mounted with `app.use()` and one pass-through guard on the route, the structure every
 * middleware-plus-guard library adds (`app.use(auth())`, `requireAuth()`).
 */
export type Reference = 'floor-layers';

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

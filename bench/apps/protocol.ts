/** Messages between the bench orchestrator and an app process (over the child-process IPC channel). */

export type Contender = 'library' | 'floor' | 'eoc-cookie' | 'eoc-redis';

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

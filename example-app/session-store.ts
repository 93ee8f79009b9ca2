/**
 * Where sessions live: Redis when one answers at REDIS_URL (default redis://127.0.0.1:6379), otherwise
 * express-session's memory store, with a warning nobody can miss.
 */
import { RedisStore } from 'connect-redis';
import session, { type Store } from 'express-session';
import { Redis } from 'ioredis';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

export type SessionBackend =
  | { kind: 'redis'; store: Store; redis: Redis; url: string; close(): Promise<void> }
  | { kind: 'memory'; store: Store; redis: undefined; url: string; reason: string; close(): Promise<void> };

/** The URL without its password, for printing. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.href;
  } catch {
    return '(unparsable URL)';
  }
}

/** One PING with a short timeout and no retries: only asks whether a Redis answers right now. */
async function answers(url: string, timeoutMs: number): Promise<{ ok: true } | { ok: false; reason: string }> {
  const probe = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  probe.on('error', () => {
    // Reported through the rejected connect() below.
  });
  try {
    await probe.connect();
    const pong = await probe.ping();
    return pong === 'PONG' ? { ok: true } : { ok: false, reason: `unexpected PING answer ${JSON.stringify(pong)}` };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  } finally {
    // After a refused connection the client has already ended; disconnecting again would leave ioredis's
    // 2-second stream-destroy timer holding the process open.
    if (probe.status !== 'end') probe.disconnect();
  }
}

export interface SessionBackendOptions {
  /** @default process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' */
  url?: string | undefined;
  /** Key prefix of the sessions in Redis. */
  prefix: string;
  /** @default 1500 */
  probeTimeoutMs?: number;
}

export async function openSessionBackend(options: SessionBackendOptions): Promise<SessionBackend> {
  const url = options.url ?? DEFAULT_REDIS_URL;
  const probe = await answers(url, options.probeTimeoutMs ?? 1500);
  if (!probe.ok) {
    return {
      kind: 'memory',
      store: new session.MemoryStore(),
      redis: undefined,
      url,
      reason: probe.reason,
      close: async () => {},
    };
  }
  // The long-lived client reconnects on its own; a request during an outage fails (503) instead of waiting forever.
  // commandTimeout: a Redis that hangs (rather than refusing connections) fails requests instead of holding them.
  const redis = new Redis(url, { maxRetriesPerRequest: 2, commandTimeout: 2000 });
  redis.on('error', (err: Error) => console.error(`redis (${redactUrl(url)}): ${err.message}`));
  return {
    kind: 'redis',
    store: new RedisStore({ client: redis, prefix: options.prefix }),
    redis,
    url,
    close: async () => {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** The warning printed when sessions fall back to memory. */
export function memoryStoreWarning(url: string, reason: string): string {
  const lines = [
    'WARNING: sessions are kept in MEMORY (express-session MemoryStore).',
    `No Redis answered at ${redactUrl(url)} (${reason}).`,
    'Logins are lost on restart, are not shared between processes, and the memory store leaks:',
    'fine for trying the example, never for production. Start Redis or set REDIS_URL.',
  ];
  const width = Math.max(...lines.map((l) => l.length));
  const rule = '!'.repeat(width + 4);
  return [rule, ...lines.map((l) => `! ${l.padEnd(width)} !`), rule].join('\n');
}

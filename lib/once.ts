import type { ResolvedConfig } from './options.js';
import { storeUnavailable } from './store-errors.js';

/**
 * Marks a value as used, exactly once: `claim(key)` is true for the first caller only. Inside a process a map
 * answers; with `redis` a `SET NX PX` makes it hold across processes. Used for callback `state` values so that
 * two concurrent callbacks can never redeem one code twice.
 */
export interface OnceRegistry {
  /** True for the first caller only. A store failure rejects, and leaves the value unclaimed everywhere. */
  claim(key: string, ttlMs: number): Promise<boolean>;
  /**
   * Gives a claimed value back (best effort), for a claim whose work failed and that its sender may retry. Never for a
   * callback `state`: a code is redeemed at most once, whatever happens after.
   */
  release(key: string): Promise<void>;
}

const MAX_LOCAL_ENTRIES = 100_000;

export function createOnceRegistry(config: ResolvedConfig): OnceRegistry {
  const local = new Map<string, number>();

  function claimLocally(key: string, ttlMs: number, now: number): boolean {
    const until = local.get(key);
    if (until !== undefined && until > now) return false;
    if (local.size >= MAX_LOCAL_ENTRIES) {
      for (const [k, expiry] of local) if (expiry <= now) local.delete(k);
      // Still full of live entries: forget the oldest; Redis (when configured) still guards across processes.
      if (local.size >= MAX_LOCAL_ENTRIES) local.delete(local.keys().next().value as string);
    }
    local.set(key, now + ttlMs);
    return true;
  }

  return {
    async claim(key, ttlMs) {
      if (!claimLocally(key, ttlMs, Date.now())) return false;
      if (config.redis === undefined) return true;
      try {
        const result = await config.redis.set(`${config.keyPrefix}once:${key}`, '1', 'PX', ttlMs, 'NX');
        return result === 'OK';
      } catch (err) {
        // Nobody holds it: the process must not refuse a retry that Redis, once back, would accept.
        local.delete(key);
        throw storeUnavailable(err);
      }
    },
    async release(key) {
      local.delete(key);
      // If this fails too, the claim runs out with its TTL.
      await config.redis?.del(`${config.keyPrefix}once:${key}`).catch(() => undefined);
    },
  };
}

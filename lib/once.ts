import { randomBytes } from 'node:crypto';
import type { ResolvedConfig } from './options.js';
import { storeUnavailable } from './store-errors.js';

/** What a refused {@link OnceRegistry.claim} ran into: work that finished, or work that another attempt still does. */
export type ClaimHolder = 'used' | 'in_progress';

/**
 * Marks a value as used, exactly once: `claim(key)` gives an id to the first caller only. Inside a process a map
 * answers; with `redis` a `SET NX PX` makes it hold across processes. Used for callback `state` values so that
 * two concurrent callbacks can never redeem one code twice.
 */
export interface OnceRegistry {
  /**
   * The claim's id (a random string, truthy) for the first caller only, undefined for every other. A store failure
   * rejects, and leaves the value unclaimed everywhere.
   */
  claim(key: string, ttlMs: number): Promise<string | undefined>;
  /**
   * For a claim whose work may fail and be retried by its sender (back-channel logout): marks the work done, so that
   * the value stays used for `ttlMs` more. Until then a claim is only in progress, and lapses with its own TTL (a
   * lease) if its process dies. Best effort: if this fails, the claim still runs out with that lease.
   */
  finish(key: string, ttlMs: number): Promise<void>;
  /** Why a claim was refused: finished work, or work still in progress (or one whose claim could not be read). */
  holder(key: string): Promise<ClaimHolder>;
  /**
   * Gives a claimed value back (best effort), for a claim whose work failed and that its sender may retry: only while
   * it is still the claim `claimId` names (another claim taken since its TTL ran out, in this process or another,
   * stays). Never for a callback `state`: a code is redeemed at most once, whatever happens after.
   */
  release(key: string, claimId: string): Promise<void>;
}

const MAX_LOCAL_ENTRIES = 100_000;
const USED = 'used';

/**
 * Deletes KEYS[1] only while it holds ARGV[1] (a claim's id, a lock's owner): after its TTL ran out, what another caller
 * wrote there since must survive.
 */
export const DELETE_IF_VALUE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

export function createOnceRegistry(config: ResolvedConfig): OnceRegistry {
  /** `value`: the claim's id, also what this process wrote into Redis for it, so that a release gives back only it. */
  const local = new Map<string, { until: number; value: string }>();
  const redisKey = (key: string): string => `${config.keyPrefix}once:${key}`;

  function remember(key: string, ttlMs: number, now: number, value: string): void {
    if (local.size >= MAX_LOCAL_ENTRIES && !local.has(key)) {
      for (const [k, entry] of local) if (entry.until <= now) local.delete(k);
      // Still full of live entries: forget the oldest; Redis (when configured) still guards across processes.
      if (local.size >= MAX_LOCAL_ENTRIES) local.delete(local.keys().next().value as string);
    }
    local.set(key, { until: now + ttlMs, value });
  }

  function claimLocally(key: string, ttlMs: number, now: number, value: string): boolean {
    const entry = local.get(key);
    if (entry !== undefined && entry.until > now) return false;
    remember(key, ttlMs, now, value);
    return true;
  }

  return {
    async claim(key, ttlMs) {
      const value = randomBytes(12).toString('base64url');
      if (!claimLocally(key, ttlMs, Date.now(), value)) return undefined;
      if (config.redis === undefined) return value;
      try {
        if ((await config.redis.set(redisKey(key), value, 'PX', ttlMs, 'NX')) === 'OK') return value;
        // Another process holds it. No local mark: if that process gives it back, a retry here must be let through.
        local.delete(key);
        return undefined;
      } catch (err) {
        // Nobody holds it: the process must not refuse a retry that Redis, once back, would accept.
        local.delete(key);
        throw storeUnavailable(err);
      }
    },
    async finish(key, ttlMs) {
      remember(key, ttlMs, Date.now(), USED);
      await config.redis?.set(redisKey(key), USED, 'PX', ttlMs).catch(() => undefined);
    },
    async holder(key) {
      const entry = local.get(key);
      if (entry?.value === USED && entry.until > Date.now()) return 'used';
      if (config.redis === undefined) return 'in_progress';
      // Unreadable, or gone since the claim was refused: the sender's next retry finds out.
      const value = await config.redis.get(redisKey(key)).catch(() => null);
      return value === USED ? 'used' : 'in_progress';
    },
    async release(key, claimId) {
      if (local.get(key)?.value === claimId) local.delete(key);
      // If this fails too, the claim runs out with its TTL.
      await config.redis?.eval(DELETE_IF_VALUE, 1, redisKey(key), claimId).catch(() => undefined);
    },
  };
}

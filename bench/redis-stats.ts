import type { Redis } from 'ioredis';

/** Calls per command, from `INFO commandstats`. */
export type CommandCounts = Record<string, number>;

export async function commandCounts(redis: Redis): Promise<CommandCounts> {
  const info = await redis.info('commandstats');
  const counts: CommandCounts = {};
  for (const line of info.split(/\r?\n/)) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (match) counts[match[1]!] = Number(match[2]);
  }
  return counts;
}

/**
 * Commands issued between two snapshots, leaving out the bench's own `info` (the only command the orchestrator
 * sends while apps are under load).
 */
export function countDelta(before: CommandCounts, after: CommandCounts): CommandCounts {
  const delta: CommandCounts = {};
  for (const [command, calls] of Object.entries(after)) {
    if (command === 'info') continue;
    const diff = calls - (before[command] ?? 0);
    if (diff > 0) delta[command] = diff;
  }
  return delta;
}

export function total(counts: CommandCounts): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/**
 * Case 1's way of loading apps, shared by the full run (`run.ts`) and the A/B comparison (`ab.ts`): CPU pinning, and
 * two apps loaded at the same time on one core, each from its own load generator.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import type { AutocannonOutcome } from './load.js';
import type { AppProcess, LoadProcess } from './processes.js';
import type { Pinning } from './results.js';

/** One side of a paired run: an app process and the cookie of the session it serves. */
export interface PairSide {
  app: AppProcess;
  cookie: string;
}

export interface LoadSettings {
  /** autocannon connections per app. */
  connections: number;
  /** Seconds of unmeasured load on both apps right before each measured paired run. */
  warmup: number;
}

/** A run with any failed request measured something else than case 1's request: never a number to report. */
export function checkLoad(name: string, outcome: AutocannonOutcome): void {
  if (outcome.non2xx > 0 || outcome.errors > 0 || outcome.requests === 0) {
    throw new Error(`${name}: ${outcome.non2xx} non-2xx answers and ${outcome.errors} errors out of ${outcome.requests}: not a valid measurement`);
  }
}

/**
 * CPU pinning (Linux `taskset`, on unless `BENCH_PIN=0`): every app process on the last CPU, this process, Redis,
 * the provider and the load generators (children started after this) on the others. An app under load then has a
 * core to itself and never shares it with the load generator or Redis, whatever the scheduler would have done; in
 * the paired case the two apps of a pair share that core and nothing else.
 */
export function pinProcesses(): Pinning | undefined {
  if (process.env.BENCH_PIN === '0') return undefined;
  const count = cpus().length;
  if (count < 2 || spawnSync('taskset', ['-V']).status !== 0) return undefined;
  const pinning: Pinning = { apps: String(count - 1), others: count === 2 ? '0' : `0-${count - 2}`, all: `0-${count - 1}` };
  // -a: every thread of this process (V8's and libuv's too); the children started later inherit it.
  execFileSync('taskset', ['-a', '-p', '-c', pinning.others, String(process.pid)], { stdio: 'ignore' });
  return pinning;
}

/** `seconds` of sustained load on an app's `GET /me` with a session's cookie (case 1's request). */
export function loadRoute(load: LoadProcess, side: PairSide, seconds: number, settings: LoadSettings): Promise<AutocannonOutcome> {
  return load.run({ mode: 'autocannon', url: `${side.app.url}/me`, headers: { cookie: side.cookie }, connections: settings.connections, duration: seconds });
}

/** Both sides of a pair under load together for `seconds`, each from its own load generator. */
export function loadPair(loads: [LoadProcess, LoadProcess], sides: [PairSide, PairSide], seconds: number, settings: LoadSettings): Promise<AutocannonOutcome[]> {
  return Promise.all(sides.map((side, i) => loadRoute(loads[i]!, side, seconds, settings)));
}

/**
 * Loads both apps of a pair at the same time, each from its own load generator, and returns each one's req/s, its
 * CPU per request and its share of one core. Pinned to one core, the two apps split it (the kernel schedules them
 * fairly), so whatever slows the machine down during the run slows both alike, and the ratio of their req/s is the
 * ratio of their costs per request.
 */
export async function measurePair(loads: [LoadProcess, LoadProcess], sides: [PairSide, PairSide], duration: number, settings: LoadSettings) {
  // Both sides loaded together first, unmeasured: an app process that sat idle for a moment is slower at first than
  // one that has just been busy, and that must not count against it.
  await loadPair(loads, sides, settings.warmup, settings);
  const cpuBefore = await Promise.all(sides.map((side) => side.app.cpu()));
  const outcomes = await loadPair(loads, sides, duration, settings);
  const cpuAfter = await Promise.all(sides.map((side) => side.app.cpu()));
  return outcomes.map((outcome, i) => {
    checkLoad(sides[i]!.app.name, outcome);
    const cpuUs = cpuAfter[i]! - cpuBefore[i]!;
    return { rps: outcome.rps, cpuUsPerRequest: cpuUs / outcome.requests, coreShare: cpuUs / (outcome.duration * 1e6) };
  });
}

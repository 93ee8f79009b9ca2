/**
 * A/B: case 1's request on two app variants, end to end, for before/after comparisons finer than a full run can show.
 *
 *   npm run bench:ab -- <A> <B>
 *
 * A side is `floor`, `floor-layers`, `floor-fetch`, `floor-import` (bench/apps/protocol.ts), `library` (this checkout's
 * `lib/`) or `library=<path to another copy's lib/index.ts>` (e.g. a `git archive` of an earlier commit). Only the two
 * apps run, each in its own process on the pinned core, loaded at the same time from two load generators that swap
 * sides every round, so both processes have the same history. The whole comparison runs twice, in fresh processes, once
 * with each side started first (the order alone moved a ratio by about 1 % in trials). Each comparison logs in like the
 * full run: a library side for real against an in-process provider (so a copy stores the session in its own format), a
 * floor side with the claims the library serves. Prints B ÷ A per round and the medians; writes nothing.
 * `npm run bench:ab -- floor floor` shows what the method reads when there is no difference.
 *
 * Knobs: `BENCH_AB_ROUNDS` (12 per order), `BENCH_WARMUP` (2 s unmeasured before the first round),
 * `BENCH_PAIRED_DURATION` (2 s measured per round), `BENCH_PAIRED_WARMUP` (1 s unmeasured before each),
 * `BENCH_CONNECTIONS` (10 per app), `BENCH_PIN=0`; `BENCH_IMPORT` (what `floor-import` imports instead of the library:
 * bench/apps/main.ts).
 */
import { fileURLToPath } from 'node:url';
import { startProvider, type TestProvider } from '../test/helpers/provider.js';
import { startPrivateRedis } from '../test/setup/global-setup.js';
import type { AppKind } from './apps/protocol.js';
import { intFromEnv } from './env.js';
import { claimsLogin, CLIENT_SECRET, cookieFor, expectLoggedIn, oauthClient, oauthLogin } from './logins.js';
import { loadPair, measurePair, pinProcesses, type LoadSettings, type PairSide } from './pairing.js';
import { AppProcess, LoadProcess } from './processes.js';
import { median, round } from './stats.js';

interface Variant {
  label: string;
  kind: AppKind;
  /** The library side's copy (`BENCH_LIB` of its process): this checkout's `lib/` unless another is named. */
  lib?: string;
}

const THIS_LIBRARY = fileURLToPath(new URL('../lib/index.ts', import.meta.url));
const rounds = intFromEnv('BENCH_AB_ROUNDS', 12);
const warmup = intFromEnv('BENCH_WARMUP', 2);
const duration = intFromEnv('BENCH_PAIRED_DURATION', 2);
const LOAD: LoadSettings = { connections: intFromEnv('BENCH_CONNECTIONS', 10), warmup: intFromEnv('BENCH_PAIRED_WARMUP', 1) };

function parseVariant(arg: string | undefined): Variant {
  const [kind, lib] = (arg ?? '').split(/=(.*)/s) as [string, string | undefined];
  if (kind === 'library') return { label: arg!, kind, lib: lib === undefined || lib === '' ? THIS_LIBRARY : lib };
  if ((kind === 'floor' || kind === 'floor-layers' || kind === 'floor-fetch' || kind === 'floor-import') && lib === undefined) return { label: arg!, kind };
  console.error('usage: npm run bench:ab -- <A> <B>   (each: floor | floor-layers | floor-fetch | floor-import | library | library=<path to lib/index.ts>)');
  process.exit(2);
}

// The floor's claims when neither side is the library (both sides then serve the same).
const FALLBACK_CLAIMS = { sub: 'alice', email: 'alice@example.com', email_verified: true };

/**
 * Both sides' apps started (in the given order), configured against a provider of their own and logged in: the library
 * for real (so that each copy stores its session in its own format), the floor with the claims the library serves.
 */
async function startSides(variants: Array<{ which: 'A' | 'B'; variant: Variant }>, cpus: string | undefined, redisUrl: string) {
  const apps: Array<{ which: 'A' | 'B'; variant: Variant; app: AppProcess }> = [];
  const stop = () => Promise.all(apps.map(({ app }) => app.stop()));
  let provider: TestProvider | undefined;
  try {
    for (const { which, variant } of variants) apps.push({ which, variant, app: await AppProcess.start(`ab-${which}`, variant.kind, cpus, variant.lib) });
    provider = await startProvider({ clients: apps.map(({ which, app }) => oauthClient(`bench-ab-${which}`, app.url)) });
    const issuer = provider.issuer;
    await Promise.all(
      apps.map(({ which, app }) =>
        app.configure({ issuer, clientId: `bench-ab-${which}`, clientSecret: CLIENT_SECRET, redisUrl, sessionPrefix: `ab:${which}:sess:`, keyPrefix: `ab:${which}:` }),
      ),
    );
    const cookies = new Map<string, string>();
    let claims: Record<string, unknown> | undefined;
    for (const { app } of apps.filter(({ variant }) => variant.kind === 'library')) {
      const browser = await oauthLogin(app);
      claims ??= await expectLoggedIn(app, browser);
      cookies.set(app.name, cookieFor(app, browser));
    }
    for (const { app } of apps.filter(({ variant }) => variant.kind !== 'library')) {
      cookies.set(app.name, cookieFor(app, await claimsLogin(app, claims ?? FALLBACK_CLAIMS)));
    }
    const side = (which: 'A' | 'B'): PairSide => {
      const { app } = apps.find((entry) => entry.which === which)!;
      return { app, cookie: cookies.get(app.name)! };
    };
    return { sides: [side('A'), side('B')] as [PairSide, PairSide], stop };
  } catch (err) {
    await stop();
    throw err;
  } finally {
    // Logins done: `GET /me` never needs the provider again.
    await provider?.close();
  }
}

/** One comparison in fresh processes, `first` started first: B ÷ A per round, from req/s and from CPU per request. */
async function compare(a: Variant, b: Variant, first: 'A' | 'B', cpus: string | undefined, redisUrl: string) {
  const order = first === 'A' ? [{ which: 'A' as const, variant: a }, { which: 'B' as const, variant: b }] : [{ which: 'B' as const, variant: b }, { which: 'A' as const, variant: a }];
  const { sides, stop } = await startSides(order, cpus, redisUrl);
  const [sideA, sideB] = sides;
  const loads: [LoadProcess, LoadProcess] = [new LoadProcess(), new LoadProcess()];
  try {
    // Unmeasured load on both first, as the full run gives each pair before its rounds.
    await loadPair(loads, sides, warmup, LOAD);
    const rps: number[] = [];
    const cpu: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // The load generators swap sides every round.
      const swapped = r % 2 === 1;
      const measured = await measurePair(loads, swapped ? [sideB, sideA] : [sideA, sideB], duration, LOAD);
      const [ma, mb] = swapped ? [measured[1]!, measured[0]!] : [measured[0]!, measured[1]!];
      rps.push(mb.rps / ma.rps);
      cpu.push(ma.cpuUsPerRequest / mb.cpuUsPerRequest);
    }
    return { rps, cpu };
  } finally {
    await stop();
    await Promise.all(loads.map((load) => load.stop()));
  }
}

async function main(): Promise<void> {
  const [a, b] = [parseVariant(process.argv[2]), parseVariant(process.argv[3])];
  const pinning = pinProcesses();
  const redisServer = await startPrivateRedis();
  try {
    const all = { rps: [] as number[], cpu: [] as number[] };
    for (const first of ['A', 'B'] as const) {
      const { rps, cpu } = await compare(a, b, first, pinning?.apps, redisServer.url);
      all.rps.push(...rps);
      all.cpu.push(...cpu);
      console.log(`${first} started first: B ÷ A = ${round(median(rps), 3)} (req/s), ${round(median(cpu), 3)} (CPU per request); rounds ${rps.map((x) => round(x, 3)).join(' ')}`);
    }
    console.log(`A = ${a.label}, B = ${b.label}: B ÷ A = ${round(median(all.rps), 3)} from req/s, ${round(median(all.cpu), 3)} from CPU per request (medians of ${all.rps.length} rounds)`);
  } finally {
    await redisServer.stop();
  }
}

main().catch((err: unknown) => {
  console.error(`[bench:ab] failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});

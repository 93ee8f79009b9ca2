/**
 * `npm run bench`: every case, on this machine, in one run. See bench/README.md for what is measured and how to
 * read the results. Writes bench/results.json (raw) and bench/RESULTS.md (tables).
 *
 * Layout: this process runs the private Redis (a child), the oidc-provider (in-process, idle during load) and the
 * orchestration; each app is a child process; the load comes from two long-lived load-generator children.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { Browser } from '../test/helpers/browser.js';
import { startProvider, type TestProvider } from '../test/helpers/provider.js';
import { startPrivateRedis, type PrivateRedis } from '../test/setup/global-setup.js';
import { BENCH_SESSION_SECRET, sessionCookie, type Contender } from './apps/protocol.js';
import { intFromEnv } from './env.js';
import type { AutocannonOutcome, BurstOutcome } from './load.js';
import { claimsLogin, CLIENT_SECRET, cookieFor, expectLoggedIn, oauthClient, oauthLogin } from './logins.js';
import type { OverheadJob, OverheadOutcome } from './overhead.js';
import { checkLoad, loadPair, loadRoute, measurePair, pinProcesses, type LoadSettings, type PairSide } from './pairing.js';
import { AppProcess, LoadProcess, runScript } from './processes.js';
import { commandCounts, countDelta, total, type CommandCounts } from './redis-stats.js';
import { renderReport } from './report.js';
import type { BenchResults, CommandCost, LoginCost, PairedResult, SessionSize, StormResult, Throughput } from './results.js';
import { median, percentile, round } from './stats.js';

const here = dirname(fileURLToPath(import.meta.url));

/** Knobs (environment variables) with defaults sized for a 2-core machine: the whole run takes about 5 minutes. */
export const settings = {
  /** Paired rounds of case 1 per app: each loads the floor and that app at the same time (see bench/README.md). */
  pairedRounds: intFromEnv('BENCH_PAIRED_ROUNDS', 8),
  /** Seconds of load per pair per paired round. */
  pairedDuration: intFromEnv('BENCH_PAIRED_DURATION', 2),
  /** Seconds of unmeasured load on both apps of a pair right before each measured run. */
  pairedWarmup: intFromEnv('BENCH_PAIRED_WARMUP', 1),
  /** Rounds of case 1 with each contender alone (absolute req/s, latency), order forward then backward. */
  rounds: intFromEnv('BENCH_ROUNDS', 4),
  /** Seconds of load per contender per round alone. */
  duration: intFromEnv('BENCH_DURATION', 3),
  /** Seconds of unmeasured load on each process pair (the floor's and the other app's) before its paired rounds. */
  warmup: intFromEnv('BENCH_WARMUP', 2),
  connections: intFromEnv('BENCH_CONNECTIONS', 10),
  /** App processes per contender for case 1, used in turn. */
  instances: intFromEnv('BENCH_INSTANCES', 2),
  /** Requests per contender for the exact Redis command count (case 2). */
  countedRequests: intFromEnv('BENCH_COUNTED_REQUESTS', 2000),
  /** Logins per contender per round, and rounds, for the login cost (case 4). */
  logins: intFromEnv('BENCH_LOGINS', 10),
  loginRounds: intFromEnv('BENCH_LOGIN_ROUNDS', 3),
  /** Unmeasured logins per contender after those rounds, then logins per round (as many rounds) for the warm login cost. */
  loginWarmup: intFromEnv('BENCH_LOGIN_WARMUP', 20),
  warmLogins: intFromEnv('BENCH_WARM_LOGINS', 20),
  /** In-process variant of case 1: trials per variant and requests per trial (the fastest trial counts). */
  overheadTrials: intFromEnv('BENCH_OVERHEAD_TRIALS', 200),
  overheadRequests: intFromEnv('BENCH_OVERHEAD_REQUESTS', 300),
  /** Refresh storm (case 3): requests per storm (split over two processes), storms, single-refresh samples. */
  stormRequests: intFromEnv('BENCH_STORM_REQUESTS', 200),
  storms: intFromEnv('BENCH_STORMS', 3),
  singleRefreshes: intFromEnv('BENCH_SINGLE_REFRESHES', 6),
  /** Access-token lifetime of the storm client, seconds. */
  stormTokenTtl: intFromEnv('BENCH_STORM_TTL', 10),
};

const CONTENDERS: readonly Contender[] = ['floor', 'library', 'eoc-cookie', 'eoc-redis'];
const OAUTH_CONTENDERS: readonly Contender[] = ['library', 'eoc-cookie', 'eoc-redis'];
export const LABELS: Record<Contender, string> = {
  floor: 'floor: express-session + connect-redis',
  library: 'express-oauth-pkce (Redis session)',
  'eoc-cookie': 'express-openid-connect (cookie session)',
  'eoc-redis': 'express-openid-connect (Redis store)',
};
const STORM_CLIENT = 'bench-storm';
const LAYERED_PREFIX = 'bench:floor-layers:sess:';
/** The pairs of case 1 that get floor processes of their own; `references` is shared by the two floor-code references. */
const PAIR_FLOOR_KEYS = [...OAUTH_CONTENDERS, 'references', 'floor-layers'];
const SESSION_PREFIX: Record<Contender, string> = {
  floor: 'bench:floor:sess:',
  library: 'bench:library:sess:',
  'eoc-cookie': 'bench:eoc-cookie:sess:',
  'eoc-redis': 'bench:eoc-redis:sess:',
};

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Token-endpoint calls with `grant_type=refresh_token` seen by the provider so far (successful or not). */
function refreshCalls(provider: TestProvider): number {
  return provider.events.filter((e) => {
    if (e.name !== 'grant.success' && e.name !== 'grant.error') return false;
    const ctx = e.args[0] as { oidc?: { params?: { grant_type?: unknown } } } | undefined;
    return ctx?.oidc?.params?.grant_type === 'refresh_token';
  }).length;
}

/** The connect-redis key of an express-session cookie (`s:<id>.<signature>`). */
function expressSessionKey(prefix: string, browser: Browser, app: AppProcess): string {
  const raw = browser.cookie(new URL(app.url).hostname, 'connect.sid')?.value;
  if (raw === undefined) throw new Error(`${app.name}: no connect.sid cookie`);
  const value = decodeURIComponent(raw);
  return prefix + value.slice(2, value.lastIndexOf('.'));
}

/** How case 1 loads an app: `settings`' connections, and its unmeasured seconds before each paired run. */
const LOAD: LoadSettings = { connections: settings.connections, warmup: settings.pairedWarmup };

async function main(): Promise<void> {
  const started = Date.now();
  const cleanups: Array<() => Promise<unknown>> = [];
  try {
    const pinning = pinProcesses();
    log(pinning === undefined ? 'no CPU pinning (BENCH_PIN=0, one CPU, or no taskset)' : `pinning: apps on CPU ${pinning.apps}, everything else on CPU ${pinning.others}`);
    log('starting a private redis-server');
    const redisServer: PrivateRedis = await startPrivateRedis();
    cleanups.push(() => redisServer.stop());
    const admin = new Redis(redisServer.url);
    cleanups.push(async () => admin.disconnect());

    log('starting app processes');
    // Several processes per contender, used in turn by the rounds of case 1: one process's memory layout and JIT
    // choices can make it a few per cent faster or slower than its twin, and that must not decide a ratio.
    const instances = {} as Record<Contender, Array<AppProcess<Contender>>>;
    const starting: Array<Promise<unknown>> = [];
    for (const c of CONTENDERS) {
      instances[c] = [];
      for (let i = 0; i < settings.instances; i++) {
        starting.push(AppProcess.start(`${c}-${i + 1}`, c, pinning?.apps).then((app) => (instances[c][i] = app)));
      }
    }
    const layered: AppProcess[] = [];
    for (let i = 0; i < settings.instances; i++) {
      starting.push(AppProcess.start(`floor-layers-${i + 1}`, 'floor-layers', pinning?.apps).then((app) => (layered[i] = app)));
    }
    // Case 1 paired: each pair's floor side is a floor of its own, started with the other side and loaded and idle
    // exactly when it is. A floor process shared by every pair (always busy) read about 3 % faster than a floor process
    // with a contender's history (busy only during its own pair), which is a bias against every contender (FIXES.md §6).
    const pairFloors: Record<string, AppProcess[]> = {};
    for (const key of PAIR_FLOOR_KEYS) {
      pairFloors[key] = [];
      for (let i = 0; i < settings.instances; i++) {
        starting.push(AppProcess.start(`floor-vs-${key}-${i + 1}`, 'floor', pinning?.apps).then((app) => (pairFloors[key]![i] = app)));
      }
    }
    const stormApps: Array<AppProcess<Contender>> = [];
    // The storm's two processes may use every CPU, as before pinning: that case is about coordination, not cost.
    starting.push(...['storm-a', 'storm-b'].map((name, i) => AppProcess.start(name, 'library', pinning?.all).then((app) => (stormApps[i] = app))));
    const outcomes = await Promise.allSettled(starting);
    const all = [...CONTENDERS.flatMap((c) => instances[c]), ...layered, ...Object.values(pairFloors).flat(), ...stormApps].filter(
      (a): a is AppProcess => a !== undefined,
    );
    cleanups.push(() => Promise.all(all.map((a) => a.stop())));
    const failed = outcomes.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    const stormA = stormApps[0]!;
    const stormB = stormApps[1]!;
    const load = new LoadProcess();
    cleanups.push(() => load.stop());
    // The first process of each contender takes the logins (its callback URL is the registered one); sessions live
    // in Redis (or in the encrypted cookie), so every twin serves the same cookie.
    const apps = Object.fromEntries(CONTENDERS.map((c) => [c, instances[c][0]!])) as Record<Contender, AppProcess<Contender>>;
    const library = apps.library;
    const floor = apps.floor;

    const defaultTtl = { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, RefreshToken: 86400, Interaction: 600, Session: 86400, Grant: 86400 };
    const provider = await startProvider({
      clients: [
        ...OAUTH_CONTENDERS.map((c) => oauthClient(`bench-${c}`, apps[c].url)),
        oauthClient(STORM_CLIENT, stormA.url),
      ],
      configuration: {
        ttl: {
          ...defaultTtl,
          BackchannelAuthenticationRequest: 600,
          ClientCredentials: 600,
          DeviceCode: 600,
          AccessToken: (_ctx, _token, client) => (client?.clientId === STORM_CLIENT ? settings.stormTokenTtl : defaultTtl.AccessToken),
        },
        // The recommended server setting (RFC 9700 §4.14.2): a refresh token used twice revokes the grant.
        rotateRefreshToken: true,
      },
    });
    cleanups.push(() => provider.close());
    log(`provider at ${provider.issuer}`);

    const base = { issuer: provider.issuer, clientSecret: CLIENT_SECRET, redisUrl: redisServer.url };
    await Promise.all([
      ...CONTENDERS.flatMap((c) =>
        instances[c].map((app) => app.configure({ ...base, clientId: `bench-${c}`, sessionPrefix: SESSION_PREFIX[c], keyPrefix: `bench:${c}:` })),
      ),
      ...[stormA, stormB].map((a) => a.configure({ ...base, clientId: STORM_CLIENT, sessionPrefix: 'bench:storm:sess:', keyPrefix: 'bench:storm:' })),
      ...layered.map((a) => a.configure({ ...base, clientId: 'bench-floor-layers', sessionPrefix: LAYERED_PREFIX, keyPrefix: 'bench:floor-layers:' })),
      ...Object.values(pairFloors)
        .flat()
        .map((a) => a.configure({ ...base, clientId: 'bench-floor', sessionPrefix: SESSION_PREFIX.floor, keyPrefix: 'bench:floor:' })),
    ]);

    // ---- Every contender logged in for real ----
    log('logging every contender in');
    const browsers = {} as Record<Contender, Browser>;
    for (const c of OAUTH_CONTENDERS) browsers[c] = await oauthLogin(apps[c]);
    const libraryClaims = await expectLoggedIn(library, browsers.library);
    // The floor's login stores exactly the claims the library serves: both routes answer the same JSON.
    browsers.floor = await claimsLogin(floor, libraryClaims);
    const cookies = Object.fromEntries(CONTENDERS.map((c) => [c, cookieFor(apps[c], browsers[c])])) as Record<Contender, string>;
    // The references of the paired case. floor-layers logs in like the floor. "floor + the library's session": the
    // floor's own session value plus the library's session slot as stored for this login (its claims are the floor's
    // `user` already), served by the floor's code: what the library's session costs, without any of its code.
    const layeredBrowser = await claimsLogin(layered[0]!, libraryClaims);
    const librarySession = JSON.parse((await admin.get(expressSessionKey(SESSION_PREFIX.library, browsers.library, library)))!) as {
      oauth: { login: Record<string, unknown> };
    };
    const floorSession = JSON.parse((await admin.get(expressSessionKey(SESSION_PREFIX.floor, browsers.floor, floor)))!) as Record<string, unknown>;
    const { claims: _served, ...libraryLogin } = librarySession.oauth.login;
    const payloadSessionId = randomBytes(24).toString('base64url');
    await admin.set(
      SESSION_PREFIX.floor + payloadSessionId,
      JSON.stringify({ ...floorSession, oauth: { ...librarySession.oauth, login: libraryLogin } }),
      'EX',
      86_400,
    );
    const references = {
      payload: { cookie: sessionCookie(payloadSessionId, BENCH_SESSION_SECRET), label: "floor + the library's session (the floor's code)" },
      layers: { cookie: cookieFor(layered[0]!, layeredBrowser), label: 'floor + a pass-through middleware and route guard' },
    };

    // ---- Case 3, part 1: storm logins now, so that their tokens expire while the other cases run ----
    log('logging in the refresh-storm sessions');
    const stormBrowsers: Browser[] = [];
    for (let i = 0; i < settings.singleRefreshes + settings.storms; i++) stormBrowsers.push(await oauthLogin(stormA));
    const stormLoggedInAt = Date.now();

    // ---- Case 2: Redis commands per authenticated request (exact request count; also warms every app up) ----
    log('case 2: Redis commands per request');
    const commands = {} as Record<Contender, CommandCost>;
    for (const c of CONTENDERS) {
      const before = await commandCounts(admin);
      const outcome = await load.run({
        mode: 'autocannon',
        url: `${apps[c].url}/me`,
        headers: { cookie: cookies[c] },
        connections: settings.connections,
        amount: settings.countedRequests,
      });
      const delta: CommandCounts = countDelta(before, await commandCounts(admin));
      checkLoad(c, outcome);
      const breakdown = Object.fromEntries(Object.entries(delta).map(([k, v]) => [k, round(v / outcome.requests, 3)]));
      commands[c] = { perRequest: round(total(delta) / outcome.requests, 3), breakdown, requests: outcome.requests };
      log(`  ${c}: ${commands[c].perRequest} commands/request ${JSON.stringify(breakdown)}`);
    }

    // ---- Case 1: throughput, alternating contenders ----
    // ---- Case 1, paired: the floor and one other app loaded at the same time, sharing the apps' core ----
    // Every pair: the floor side from its own floor processes (pairFloors), the other side from that app's processes.
    const pairs: Array<{ key: string; label: string; floor: AppProcess[]; side: (round: number) => PairSide }> = [
      ...OAUTH_CONTENDERS.map((c) => ({
        key: c,
        label: LABELS[c],
        floor: pairFloors[c]!,
        side: (r: number) => ({ app: instances[c][r % settings.instances]!, cookie: cookies[c] }),
      })),
      // The floor against the floor: what the method reads when there is no difference (ideally 1.00; 0.98–1.02 from run
      // to run, FIXES.md §6). Its other side is the contenders' own floor processes (instances.floor), which, like every
      // contender's, are busy only in their pairs.
      {
        key: 'floor-2',
        label: 'the floor again, in processes of its own (the null check)',
        floor: pairFloors.references!,
        side: (r: number) => ({ app: instances.floor[r % settings.instances]!, cookie: cookies.floor }),
      },
      // The same two sets of processes: both sides of both reference pairs share one history.
      {
        key: 'floor+payload',
        label: references.payload.label,
        floor: pairFloors.references!,
        side: (r: number) => ({ app: instances.floor[r % settings.instances]!, cookie: references.payload.cookie }),
      },
      {
        key: 'floor-layers',
        label: references.layers.label,
        floor: pairFloors['floor-layers']!,
        side: (r: number) => ({ app: layered[r % settings.instances]!, cookie: references.layers.cookie }),
      },
    ];
    log(`case 1 paired: ${settings.pairedRounds} rounds × ${pairs.length} pairs × (${settings.pairedWarmup}s unmeasured + ${settings.pairedDuration}s)`);
    const secondLoad = new LoadProcess();
    cleanups.push(() => secondLoad.stop());
    const paired: Record<string, PairedResult> = {};
    // One pair after the other, its rounds back to back: drift over time drops out within a pair anyway, and an app
    // process that sat idle for long while other pairs ran needs more than the unmeasured second to be itself again
    // (interleaving the pairs round by round put every app but the floor's, which is in every pair, at that
    // disadvantage: 0.75–0.94 for the pass-through reference in one run).
    for (const pair of pairs) {
      const runs: Array<{ ratio: number; cpuRatio: number; rps: number; floorRps: number; shares: [number, number] }> = [];
      // The pair's processes sat idle while the pairs before ran: BENCH_WARMUP seconds of load on each first.
      for (let i = 0; i < settings.instances; i++) {
        await loadPair([load, secondLoad], [{ app: pair.floor[i]!, cookie: cookies.floor }, pair.side(i)], settings.warmup, LOAD);
      }
      for (let r = 0; r < settings.pairedRounds; r++) {
        const floorSide: PairSide = { app: pair.floor[r % settings.instances]!, cookie: cookies.floor };
        // Which load generator drives which side alternates from round to round.
        const generators: [LoadProcess, LoadProcess] = r % 2 === 0 ? [load, secondLoad] : [secondLoad, load];
        const [a, b] = await measurePair(generators, [floorSide, pair.side(r)], settings.pairedDuration, LOAD);
        runs.push({ ratio: b!.rps / a!.rps, cpuRatio: a!.cpuUsPerRequest / b!.cpuUsPerRequest, rps: b!.rps, floorRps: a!.rps, shares: [a!.coreShare, b!.coreShare] });
      }
      const result: PairedResult = {
        label: pair.label,
        reference: !(CONTENDERS as readonly string[]).includes(pair.key),
        ratio: round(median(runs.map((x) => x.ratio)), 3),
        cpuRatio: round(median(runs.map((x) => x.cpuRatio)), 3),
        perRound: runs.map((x) => round(x.ratio, 3)),
        rps: round(median(runs.map((x) => x.rps)), 0),
        floorRps: round(median(runs.map((x) => x.floorRps)), 0),
        floorCoreShare: round(median(runs.map((x) => x.shares[0])), 3),
        coreShare: round(median(runs.map((x) => x.shares[1])), 3),
      };
      paired[pair.key] = result;
      log(`  ${pair.key}: ${result.perRound.join(' ')} → ${result.ratio}× the floor (CPU ${result.cpuRatio}×; core shares ${result.floorCoreShare} / ${result.coreShare})`);
    }
    log(`case 1 alone: ${settings.rounds} rounds × ${settings.duration}s × ${CONTENDERS.length} contenders`);
    const profiling = process.env.BENCH_CPU_PROF === '1';
    if (profiling) for (const c of CONTENDERS) for (const app of instances[c]) await app.startProfile();
    const runs: Array<{ round: number; contender: Contender; instance: string; outcome: AutocannonOutcome; cpuUsPerRequest: number }> = [];
    for (let round = 0; round < settings.rounds; round++) {
      // Forward, then backward (ABBA): the floor and the library always run back to back, and any drift (other
      // processes on the machine, thermal) falls evenly on every contender.
      const order = round % 2 === 0 ? CONTENDERS : [...CONTENDERS].reverse();
      for (const c of order) {
        const app = instances[c][round % settings.instances]!;
        const side: PairSide = { app, cookie: cookies[c] };
        // As in the paired case: a moment of unmeasured load first, so that no app is measured straight out of idling.
        await loadRoute(load, side, settings.pairedWarmup, LOAD);
        const cpuBefore = await app.cpu();
        const outcome = await loadRoute(load, side, settings.duration, LOAD);
        // The app's own CPU per request: unlike req/s, it barely moves when other processes compete for the cores.
        const cpuUsPerRequest = ((await app.cpu()) - cpuBefore) / outcome.requests;
        checkLoad(c, outcome);
        runs.push({ round, contender: c, instance: app.name, outcome, cpuUsPerRequest });
        log(`  round ${round + 1} ${app.name}: ${Math.round(outcome.rps)} req/s, p50 ${outcome.p50} ms, p99 ${outcome.p99} ms, ${Math.round(cpuUsPerRequest)} µs CPU/request`);
      }
    }
    const throughput = {} as Record<Contender, Throughput>;
    if (profiling) {
      const served = new Map<string, number>();
      for (const r of runs) served.set(r.instance, (served.get(r.instance) ?? 0) + r.outcome.requests);
      for (const c of CONTENDERS) {
        for (const app of instances[c]) log(`  profile: ${await app.stopProfile()}:${served.get(app.name) ?? 0}`);
      }
      log('  summarise with: node --import tsx bench/profile-summary.ts <file>:<requests> ...');
    }
    const floorRuns = runs.filter((r) => r.contender === 'floor');
    const floorByRound = new Map(floorRuns.map((r) => [r.round, r.outcome.rps]));
    const floorCpuByRound = new Map(floorRuns.map((r) => [r.round, r.cpuUsPerRequest]));
    const floorMedian = median([...floorByRound.values()]);
    for (const c of CONTENDERS) {
      const mine = runs.filter((r) => r.contender === c);
      const rps = median(mine.map((r) => r.outcome.rps));
      throughput[c] = {
        rps: round(rps, 0),
        ratio: round(median(mine.map((r) => r.outcome.rps / floorByRound.get(r.round)!)), 3),
        ratioOfMedians: round(rps / floorMedian, 3),
        p50: median(mine.map((r) => r.outcome.p50)),
        p99: median(mine.map((r) => r.outcome.p99)),
        perRound: mine.map((r) => round(r.outcome.rps, 0)),
        cpuUsPerRequest: round(median(mine.map((r) => r.cpuUsPerRequest)), 1),
        cpuRatio: round(median(mine.map((r) => floorCpuByRound.get(r.round)! / r.cpuUsPerRequest)), 3),
        cpuPerRound: mine.map((r) => round(r.cpuUsPerRequest, 1)),
      };
    }

    // ---- Case 3, part 2: the storm ----
    // Before case 4: oidc-provider's memory store keeps its last 1,000 entries only, and case 4's logins (several
    // entries each) would push out the storm sessions' grants and refresh tokens, failing every refresh.
    const waitMs = stormLoggedInAt + (settings.stormTokenTtl + 1) * 1000 - Date.now();
    if (waitMs > 0) {
      log(`case 3: waiting ${Math.ceil(waitMs / 1000)}s for the storm sessions' access tokens to expire`);
      await sleep(waitMs);
    }
    log('case 3: refresh storm');
    const storm = await measureStorm(load, provider, stormA, stormB, stormBrowsers);

    // ---- Case 4: app-side CPU per complete login ----
    log(`case 4: login cost, ${settings.loginRounds} rounds × ${settings.logins} first logins, then ${settings.loginWarmup} unmeasured and ${settings.loginRounds} rounds × ${settings.warmLogins} warm`);
    const loginCost = await measureLoginCost(admin, OAUTH_CONTENDERS.map((c) => apps[c]));

    // ---- Case 5: session size ----
    log('case 5: session size');
    const sizes = await measureSizes(admin, apps, browsers);

    // ---- Case 1, in-process: the same two apps without network, Redis or other processes ----
    log(`case 1 in-process: ${settings.overheadTrials} trials × ${settings.overheadRequests} requests per variant`);
    const sessionValue = async (c: Contender) => (await admin.get(expressSessionKey(SESSION_PREFIX[c], browsers[c], apps[c])))!;
    const overhead = await runOverhead({
      floorSession: await sessionValue('floor'),
      librarySession: await sessionValue('library'),
      trials: settings.overheadTrials,
      requestsPerTrial: settings.overheadRequests,
    });
    log(`  floor ${round(overhead.floorUs, 1)} µs, library ${round(overhead.libraryUs, 1)} µs per request: ${round(overhead.ratio, 3)}×`);

    const results: BenchResults = {
      date: new Date().toISOString(),
      durationSeconds: Math.round((Date.now() - started) / 1000),
      machine: {
        cpu: cpus()[0]?.model ?? 'unknown',
        cores: cpus().length,
        node: process.version,
        redis: /redis_version:(\S+)/.exec(await admin.info('server'))?.[1] ?? 'unknown',
        commit: gitCommit(),
        pinning: pinning ?? null,
      },
      settings,
      labels: LABELS,
      case1: {
        paired,
        throughput,
        inProcess: {
          floorUs: round(overhead.floorUs, 2),
          libraryUs: round(overhead.libraryUs, 2),
          ratio: round(overhead.ratio, 3),
          floorMedianUs: round(overhead.floorMedianUs, 2),
          libraryMedianUs: round(overhead.libraryMedianUs, 2),
        },
        runs: runs.map((r) => ({ round: r.round, contender: r.contender, instance: r.instance, cpuUsPerRequest: round(r.cpuUsPerRequest, 1), ...r.outcome })) },
      case2: commands,
      case3: storm,
      case4: loginCost,
      case5: sizes,
    };
    writeFileSync(join(here, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
    const fixesFile = join(here, 'FIXES.md');
    const fixes = existsSync(fixesFile) ? readFileSync(fixesFile, 'utf8') : '';
    writeFileSync(join(here, 'RESULTS.md'), renderReport(results, fixes));
    log(`done in ${results.durationSeconds}s: bench/RESULTS.md, bench/results.json`);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}

async function runOverhead(job: OverheadJob): Promise<OverheadOutcome> {
  return JSON.parse(await runScript('overhead.ts', JSON.stringify(job))) as OverheadOutcome;
}

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: here, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', '../lib'], { cwd: here, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head} (lib/ modified)` : head;
  } catch {
    return 'unknown';
  }
}

/**
 * CPU of the app process (user + system, from `process.cpuUsage()` inside it) over a batch of complete logins:
 * `GET /login`, the provider's pages (the app is idle meanwhile), `GET /callback`. The landing page after the
 * callback is not requested, so that only the login itself is counted.
 */
async function measureLoginCost(admin: Redis, contenders: Array<AppProcess<Contender>>): Promise<Partial<Record<Contender, LoginCost>>> {
  // What one reading of the counter costs, to take it out of each batch.
  const overhead = new Map<AppProcess, number>();
  for (const app of contenders) {
    const deltas: number[] = [];
    for (let i = 0; i < 7; i++) {
      const a = await app.cpu();
      deltas.push((await app.cpu()) - a);
    }
    overhead.set(app, median(deltas));
  }
  const commands = new Map<AppProcess, CommandCounts>(contenders.map((a) => [a, {}]));
  const login = async (app: AppProcess) => {
    const browser = new Browser();
    const atCallback = await browser.login(`${app.url}/login`, {
      login: 'alice',
      stopAtCallback: (url) => url.origin === app.url && url.pathname === '/callback',
    });
    const callbackUrl = atCallback.steps.at(-1)?.location;
    if (callbackUrl === undefined || !callbackUrl.startsWith(`${app.url}/callback?`)) throw new Error(`${app.name}: the login did not reach the callback`);
    const landed = await browser.request(callbackUrl);
    if (landed.status !== 302) throw new Error(`${app.name}: the callback answered ${landed.status}`);
  };
  /** CPU ms per login of each app, per round; `count` also sums the Redis commands. */
  const measureRounds = async (rounds: number, logins: number, count: boolean) => {
    const perRound = new Map<AppProcess, number[]>(contenders.map((a) => [a, []]));
    for (let round = 0; round < rounds; round++) {
      const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
      for (const app of order) {
        const commandsBefore = count ? await commandCounts(admin) : undefined;
        const before = await app.cpu();
        for (let i = 0; i < logins; i++) await login(app);
        const after = await app.cpu();
        perRound.get(app)!.push((after - before - overhead.get(app)!) / logins / 1000);
        if (commandsBefore === undefined) continue;
        const delta = countDelta(commandsBefore, await commandCounts(admin));
        const sum = commands.get(app)!;
        for (const [command, calls] of Object.entries(delta)) sum[command] = (sum[command] ?? 0) + calls;
      }
    }
    return perRound;
  };
  const profiling = process.env.BENCH_CPU_PROF === '1';
  if (profiling) for (const app of contenders) await app.startProfile();
  // The first logins of each process (it has logged in once, to serve case 1): they include compiling the login's code.
  const first = await measureRounds(settings.loginRounds, settings.logins, true);
  if (profiling) {
    for (const app of contenders) log(`  profile: ${await app.stopProfile('login')}:${settings.loginRounds * settings.logins}`);
  }
  // Then what a process that signs users in all day spends: after unmeasured logins, with the login's code compiled.
  for (const app of contenders) for (let i = 0; i < settings.loginWarmup; i++) await login(app);
  const warm = await measureRounds(settings.loginRounds, settings.warmLogins, false);
  const result: Partial<Record<Contender, LoginCost>> = {};
  for (const app of contenders) {
    const values = first.get(app)!;
    const warmValues = warm.get(app)!;
    const logins = settings.loginRounds * settings.logins;
    const sum = commands.get(app)!;
    result[app.contender] = {
      cpuMs: round(median(values), 3),
      perRound: values.map((v) => round(v, 3)),
      warm: { cpuMs: round(median(warmValues), 3), perRound: warmValues.map((v) => round(v, 3)) },
      redisCommands: round(total(sum) / logins, 2),
      redisBreakdown: Object.fromEntries(Object.entries(sum).map(([k, v]) => [k, round(v / logins, 2)])),
    };
    log(`  ${app.contender}: ${result[app.contender]!.cpuMs} ms CPU (warm: ${result[app.contender]!.warm!.cpuMs}), ${result[app.contender]!.redisCommands} Redis commands per login ${JSON.stringify(result[app.contender]!.redisBreakdown)}`);
  }
  return result;
}

async function measureSizes(admin: Redis, apps: Record<Contender, AppProcess<Contender>>, browsers: Record<Contender, Browser>): Promise<Record<Contender, SessionSize>> {
  const memory = async (key: string) => Number(await admin.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
  const sizes = {} as Record<Contender, SessionSize>;
  for (const c of CONTENDERS) {
    const app = apps[c];
    const cookieBytes = Buffer.byteLength(cookieFor(app, browsers[c]));
    let key: string | undefined;
    if (c === 'library' || c === 'floor') key = expressSessionKey(SESSION_PREFIX[c], browsers[c], app);
    if (c === 'eoc-redis') key = SESSION_PREFIX[c] + browsers[c].cookie(new URL(app.url).hostname, 'appSession')!.value;
    if (key === undefined) {
      sizes[c] = { cookieBytes };
      log(`  ${c}: cookie ${cookieBytes} B`);
      continue;
    }
    const value = await admin.get(key);
    if (value === null) throw new Error(`${c}: session key not found`);
    const size: SessionSize = { memoryUsage: await memory(key), valueBytes: Buffer.byteLength(value), cookieBytes };
    if (c === 'library') {
      // Keys the library writes for this login (token store, lock…) carry the login id; count them too.
      const loginId = (JSON.parse(value) as { oauth?: { login?: { id?: string } } }).oauth?.login?.id;
      if (loginId !== undefined) {
        size.loginKeys = {};
        for (const k of await admin.keys(`bench:library:*${loginId}*`)) size.loginKeys[k.replace(loginId, '<login-id>')] = await memory(k);
      }
    }
    sizes[c] = size;
    log(`  ${c}: MEMORY USAGE ${size.memoryUsage} B, value ${size.valueBytes} B, cookie ${cookieBytes} B`);
  }
  return sizes;
}

function tally(statuses: number[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

/**
 * Single refreshes first (one request, one expired login, nothing else running), alternating the two processes;
 * the first one in each process warms it up and is dropped. Then each storm: `stormRequests` requests of one
 * expired login at once, half on each process.
 */
async function measureStorm(load: LoadProcess, provider: TestProvider, a: AppProcess, b: AppProcess, browsers: Browser[]): Promise<StormResult> {
  const cookie = (browser: Browser) => cookieFor(a, browser);
  const single: StormResult['single'] = { latenciesMs: [], medianMs: Number.NaN, tokenCalls: [], statuses: [] };
  for (let i = 0; i < settings.singleRefreshes; i++) {
    const app = i % 2 === 0 ? a : b;
    const before = refreshCalls(provider);
    const outcome: BurstOutcome = await load.run({ mode: 'burst', targets: [{ url: `${app.url}/token`, count: 1 }], headers: { cookie: cookie(browsers[i]!) } });
    single.tokenCalls.push(refreshCalls(provider) - before);
    single.statuses.push(outcome.statuses[0]!);
    if (i >= 2) single.latenciesMs.push(round(outcome.latencies[0]!, 2));
  }
  single.medianMs = round(median(single.latenciesMs), 2);
  const refreshAvailable = single.statuses.every((s) => s === 200) && single.tokenCalls.every((n) => n === 1);
  log(`  single refresh: ${single.medianMs} ms (statuses ${single.statuses.join(',')}, token calls ${single.tokenCalls.join(',')})`);

  const storms: StormResult['storms'] = [];
  for (let s = 0; s < settings.storms; s++) {
    const browser = browsers[settings.singleRefreshes + s]!;
    const before = refreshCalls(provider);
    const half = Math.floor(settings.stormRequests / 2);
    const outcome: BurstOutcome = await load.run({
      mode: 'burst',
      targets: [
        { url: `${a.url}/token`, count: settings.stormRequests - half },
        { url: `${b.url}/token`, count: half },
      ],
      headers: { cookie: cookie(browser) },
    });
    const tokenCalls = refreshCalls(provider) - before;
    const tokens = new Set(outcome.bodies.filter((_, i) => outcome.statuses[i] === 200));
    // The grant must still be alive: a refresh token used twice would have revoked it.
    const after = await browser.request(`${a.url}/token`, { headers: { accept: 'application/json' } });
    // The same burst again, now that the token is fresh: what 200 requests at once cost without any refresh, so
    // that the storm's latency can be read as queueing plus what the refresh adds.
    const beforeCalm = refreshCalls(provider);
    const calm: BurstOutcome = await load.run({
      mode: 'burst',
      targets: [
        { url: `${a.url}/token`, count: settings.stormRequests - half },
        { url: `${b.url}/token`, count: half },
      ],
      headers: { cookie: cookie(browser) },
    });
    const storm = {
      validTokenBurst: {
        p50Ms: round(percentile(calm.latencies, 50), 2),
        p99Ms: round(percentile(calm.latencies, 99), 2),
        tokenCalls: refreshCalls(provider) - beforeCalm,
        statuses: tally(calm.statuses),
      },
      requests: outcome.latencies.length,
      tokenCalls,
      statuses: tally(outcome.statuses),
      distinctTokens: tokens.size,
      p50Ms: round(percentile(outcome.latencies, 50), 2),
      p99Ms: round(percentile(outcome.latencies, 99), 2),
      maxMs: round(Math.max(...outcome.latencies), 2),
      wallMs: round(outcome.wall, 2),
      grantSurvives: after.status === 200 && tokens.has(after.body),
    };
    storms.push(storm);
    log(
      `  storm ${s + 1}: ${tokenCalls} token-endpoint call(s), statuses ${JSON.stringify(storm.statuses)}, ${tokens.size} distinct token(s), p50 ${storm.p50Ms} ms, p99 ${storm.p99Ms} ms; ` +
        `same burst with a valid token: p50 ${storm.validTokenBurst.p50Ms} ms, p99 ${storm.validTokenBurst.p99Ms} ms`,
    );
  }
  const result: StormResult = { refreshAvailable, single, storms };
  if (!refreshAvailable) {
    result.note =
      'req.auth.getAccessToken() did not refresh an expired token in this build (see the statuses): refresh (issue 3) is not in this code yet, so the storm measures nothing but the 401 path.';
  } else {
    const p50 = median(storms.map((s) => s.p50Ms));
    const p99 = median(storms.map((s) => s.p99Ms));
    const calmP50 = median(storms.map((s) => s.validTokenBurst.p50Ms));
    const calmP99 = median(storms.map((s) => s.validTokenBurst.p99Ms));
    result.median = {
      p50Ms: p50,
      p99Ms: p99,
      p50OverSingle: round(p50 / single.medianMs, 2),
      p99OverSingle: round(p99 / single.medianMs, 2),
      validTokenBurstP50Ms: calmP50,
      validTokenBurstP99Ms: calmP99,
      p50AddedOverSingle: round((p50 - calmP50) / single.medianMs, 2),
      p99AddedOverSingle: round((p99 - calmP99) / single.medianMs, 2),
    };
  }
  return result;
}

main().catch((err: unknown) => {
  console.error(`[bench] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});

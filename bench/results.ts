/** The shape of bench/results.json. */
import type { Contender } from './apps/protocol.js';
import type { AutocannonOutcome } from './load.js';

export interface Throughput {
  /** Median requests per second over the rounds. */
  rps: number;
  /** Median over rounds of (this contender's req/s ÷ the floor's req/s in the same round). */
  ratio: number;
  /** Median req/s ÷ the floor's median req/s (a cross-check of `ratio`). */
  ratioOfMedians: number;
  /** Medians over rounds of autocannon's p50/p99 latency, milliseconds. */
  p50: number;
  p99: number;
  perRound: number[];
  /** Median over rounds of the app process's CPU time per request, microseconds. */
  cpuUsPerRequest: number;
  /** Median over rounds of (the floor's CPU per request ÷ this contender's, same round): the throughput ratio a CPU-bound app would reach. */
  cpuRatio: number;
  cpuPerRound: number[];
}

/** Case 1, paired: the floor and one other app loaded at the same time, both pinned to one core. */
export interface PairedResult {
  label: string;
  /** True for the apps that take the floor apart (not contenders). */
  reference: boolean;
  /** Median over rounds of (this app's req/s ÷ the floor's req/s in the same run). */
  ratio: number;
  /** Median over rounds of (the floor's CPU per request ÷ this app's, same run). */
  cpuRatio: number;
  perRound: number[];
  /** Medians over rounds: req/s of this app and of the floor while they shared the core. */
  rps: number;
  floorRps: number;
  /** Medians over rounds of each side's share of one core (CPU time ÷ wall time): about 0.5 each when the core was the bottleneck. */
  floorCoreShare: number;
  coreShare: number;
}

/** Where `taskset` put the processes (CPU lists), or null when nothing was pinned. */
export interface Pinning {
  apps: string;
  others: string;
  /** Every CPU: the refresh storm's processes. */
  all: string;
}

export interface CommandCost {
  /** Redis commands per authenticated request (all commands, from `INFO commandstats` deltas). */
  perRequest: number;
  breakdown: Record<string, number>;
  requests: number;
}

export interface LoginCost {
  /** Median app-process CPU per complete login over the process's first logins (`loginRounds` × `logins`), milliseconds. */
  cpuMs: number;
  perRound: number[];
  /**
   * The same after `loginWarmup` more logins, over `loginRounds` rounds of `warmLogins`: a process whose login code is
   * compiled. Absent in results written before it was measured.
   */
  warm?: { cpuMs: number; perRound: number[] };
  /** Redis commands per login (all of them, `INFO commandstats`), and per command. */
  redisCommands: number;
  redisBreakdown: Record<string, number>;
}

export interface SessionSize {
  /** `MEMORY USAGE` of the session key, bytes (Redis contenders). */
  memoryUsage?: number;
  /** Length of the stored value, bytes. */
  valueBytes?: number;
  /** Other Redis keys that belong to this one login (the library's per-login keys), with their `MEMORY USAGE`. */
  loginKeys?: Record<string, number>;
  /** Bytes of the session cookie(s) as sent in the `Cookie` header. */
  cookieBytes: number;
}

export interface StormRun {
  /** The same burst right after the storm, the token now fresh: latency without any refresh. */
  validTokenBurst: { p50Ms: number; p99Ms: number; tokenCalls: number; statuses: Record<string, number> };
  requests: number;
  tokenCalls: number;
  statuses: Record<string, number>;
  distinctTokens: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  wallMs: number;
  grantSurvives: boolean;
}

export interface StormResult {
  /** False when `getAccessToken()` could not refresh at all (the build has no refresh). */
  refreshAvailable: boolean;
  note?: string;
  single: { latenciesMs: number[]; medianMs: number; tokenCalls: number[]; statuses: number[] };
  storms: StormRun[];
  median?: {
    p50Ms: number;
    p99Ms: number;
    p50OverSingle: number;
    p99OverSingle: number;
    validTokenBurstP50Ms: number;
    validTokenBurstP99Ms: number;
    /** (storm − same burst with a valid token) ÷ single refresh: what the refresh adds, in single refreshes. */
    p50AddedOverSingle: number;
    p99AddedOverSingle: number;
  };
}

export interface BenchResults {
  date: string;
  durationSeconds: number;
  machine: { cpu: string; cores: number; node: string; redis: string; commit: string; pinning?: Pinning | null };
  settings: Record<string, number>;
  labels: Record<Contender, string>;
  case1: {
    /** Keyed by contender (`library`, `eoc-cookie`, `eoc-redis`) or reference (`floor-2`, `floor+payload`, `floor-layers`). */
    paired?: Record<string, PairedResult>;
    throughput: Record<Contender, Throughput>;
    /** bench/overhead.ts: the floor's and the library's app in one process, no I/O; fastest trial, µs per request. */
    inProcess: { floorUs: number; libraryUs: number; ratio: number; floorMedianUs: number; libraryMedianUs: number }; runs: Array<{ round: number; contender: Contender; instance: string; cpuUsPerRequest: number } & AutocannonOutcome> };
  case2: Record<Contender, CommandCost>;
  case3: StormResult;
  case4: Partial<Record<Contender, LoginCost>>;
  case5: Record<Contender, SessionSize>;
}

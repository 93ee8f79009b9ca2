/**
 * The load generator, always in a process of its own so that it never shares an event loop with an app or the
 * provider. Spawned with an IPC channel it takes jobs as messages; otherwise one JSON job on stdin, one JSON result
 * on stdout.
 *
 * - `autocannon`: sustained load on one URL (throughput and latency, cases 1 and 2).
 * - `burst`: N requests started at once over fresh connections, split over several URLs, each timed on its own and
 *   its body kept (the refresh storm, case 3: every caller must get the same token).
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';

export interface AutocannonJob {
  mode: 'autocannon';
  url: string;
  headers: Record<string, string>;
  connections: number;
  /** Seconds; ignored when `amount` is set. */
  duration?: number;
  /** Exact number of requests (for command counting). */
  amount?: number;
}

export interface AutocannonOutcome {
  requests: number;
  /** Seconds. */
  duration: number;
  rps: number;
  /** Milliseconds. */
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
}

export interface BurstJob {
  mode: 'burst';
  targets: Array<{ url: string; count: number }>;
  headers: Record<string, string>;
}

export interface BurstOutcome {
  /** Milliseconds per request, in start order. */
  latencies: number[];
  statuses: number[];
  bodies: string[];
  /** Milliseconds from the first start to the last end. */
  wall: number;
}

async function runAutocannon(job: AutocannonJob): Promise<AutocannonOutcome> {
  const result = await autocannon({
    url: job.url,
    headers: job.headers,
    connections: job.connections,
    ...(job.amount === undefined ? { duration: job.duration ?? 5 } : { amount: job.amount }),
  });
  return {
    requests: result.requests.total,
    duration: result.duration,
    rps: result.requests.total / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}

async function runBurst(job: BurstJob): Promise<BurstOutcome> {
  // No keep-alive and no socket cap: every request opens its own connection at once, like 200 browsers would.
  const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
  const urls = job.targets.flatMap((t) => Array.from({ length: t.count }, () => t.url));
  const first = performance.now();
  const results = await Promise.all(
    urls.map(
      (url) =>
        new Promise<{ latency: number; status: number; body: string }>((resolve, reject) => {
          const started = performance.now();
          const req = request(url, { agent, headers: job.headers }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.on('end', () =>
              resolve({ latency: performance.now() - started, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
            );
            res.on('error', reject);
          });
          req.on('error', reject);
          req.end();
        }),
    ),
  );
  const wall = performance.now() - first;
  agent.destroy();
  return {
    latencies: results.map((r) => r.latency),
    statuses: results.map((r) => r.status),
    bodies: results.map((r) => r.body),
    wall,
  };
}

async function run(job: AutocannonJob | BurstJob): Promise<AutocannonOutcome | BurstOutcome> {
  return job.mode === 'autocannon' ? runAutocannon(job) : runBurst(job);
}

if (process.send !== undefined) {
  // Long-lived mode: one job per IPC message, so that a run of many short rounds does not pay a process start each.
  process.on('message', (job: AutocannonJob | BurstJob) => {
    run(job).then(
      (outcome) => process.send!({ ok: true, outcome }),
      (err: unknown) => process.send!({ ok: false, message: err instanceof Error ? err.message : String(err) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
} else {
  // One-shot mode: a JSON job on stdin, the JSON outcome on stdout.
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  process.stdout.write(JSON.stringify(await run(JSON.parse(Buffer.concat(chunks).toString('utf8')) as AutocannonJob | BurstJob)));
}

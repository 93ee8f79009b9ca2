/**
 * Case 1 without the machine's noise: the per-request CPU cost of the floor's app and of the library's app, in one
 * process, with no network, no Redis and no other process involved. Requests go straight into `app.handle()`;
 * express-session runs for real over an in-memory store that parses and serialises like connect-redis does, with the
 * real session values read from Redis by the orchestrator. Each variant runs many short trials in turn and keeps its
 * fastest: interference from other processes only ever adds time, so the minimum is the cost.
 *
 * Without network and Redis this is the library's own overhead and nothing else, repeatable from run to run; it is no
 * bound of the end-to-end ratio (that adds socket and HTTP work to both apps, and costs that only show there).
 *
 * Run by bench/run.ts (a JSON job on stdin, JSON on stdout). `BENCH_LIB=/path/to/lib/index.ts` measures another
 * copy of the library (for before/after comparisons).
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import express, { type Express } from 'express';
import session, { Store, type SessionData } from 'express-session';
import { importLibrary } from './apps/common.js';
import { sessionCookie } from './apps/protocol.js';
import { median } from './stats.js';

export interface OverheadJob {
  /** The floor's and the library's session values, as stored in Redis. */
  floorSession: string;
  librarySession: string;
  trials: number;
  requestsPerTrial: number;
}

export interface OverheadOutcome {
  /** Fastest trial, microseconds per request. */
  floorUs: number;
  libraryUs: number;
  /** floorUs ÷ libraryUs: the throughput ratio of a CPU-bound app doing nothing but this. */
  ratio: number;
  /** Medians over trials, for comparison with the minima. */
  floorMedianUs: number;
  libraryMedianUs: number;
}

const SECRET = 'bench-overhead-secret';
const SID = 'bench-overhead-session-id';

/** What connect-redis does around Redis: JSON in `get`, JSON out in `set`, nothing to do in `touch` (EXPIRE). */
class ParsingMemoryStore extends Store {
  readonly #values = new Map<string, string>();
  constructor(initial: string) {
    super();
    this.#values.set(SID, initial);
  }
  override get(sid: string, callback: (err: unknown, session?: SessionData | null) => void): void {
    const raw = this.#values.get(sid);
    callback(null, raw === undefined ? null : (JSON.parse(raw) as SessionData));
  }
  override set(sid: string, value: SessionData, callback?: (err?: unknown) => void): void {
    this.#values.set(sid, JSON.stringify(value));
    callback?.();
  }
  override touch(_sid: string, _value: SessionData, callback?: () => void): void {
    callback?.();
  }
  override destroy(sid: string, callback?: (err?: unknown) => void): void {
    this.#values.delete(sid);
    callback?.();
  }
}

const cookie = sessionCookie(SID, SECRET);

function withSession(stored: string): Express {
  const app = express();
  app.use(session({ store: new ParsingMemoryStore(stored), secret: SECRET, resave: false, saveUninitialized: false }));
  return app;
}

/** One request through the app, ending when the response is complete (its bytes go nowhere). */
function request(app: Express): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = new IncomingMessage(new Socket());
    req.method = 'GET';
    req.url = '/me';
    req.headers = { host: '127.0.0.1', accept: 'application/json', cookie };
    const res = new ServerResponse(req);
    // Taken over before express-session wraps it: the wrapper (touch, hash checks) still runs, the socket write not.
    res.end = function end(this: ServerResponse) {
      resolve(this.statusCode);
      return this;
    } as ServerResponse['end'];
    (app as unknown as { handle(req: IncomingMessage, res: ServerResponse, done: (err?: unknown) => void): void }).handle(req, res, (err) =>
      reject(err instanceof Error ? err : new Error(`unhandled request (${String(err)})`)),
    );
  });
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as OverheadJob;
  const { auth, requireAuth } = await importLibrary();

  const floor = withSession(job.floorSession);
  floor.get('/me', (req, res) => {
    const user = (req.session as { user?: unknown }).user;
    if (user === undefined) res.status(401).end();
    else res.json(user);
  });

  const library = withSession(job.librarySession);
  // Discovery never runs: /me needs none. The issuer only has to be a valid URL.
  library.use(auth({ issuer: 'http://127.0.0.1:9', clientId: 'bench', clientSecret: 'bench', redirectUri: 'http://127.0.0.1:3000/callback', allowInsecureRequests: true }));
  library.get('/me', requireAuth(), (req, res) => void res.json(req.auth.claims));

  const variants = { floor, library };
  for (const [name, app] of Object.entries(variants)) {
    const status = await request(app);
    if (status !== 200) throw new Error(`${name}: GET /me answered ${status}; the session value does not hold a login`);
  }
  const times: Record<keyof typeof variants, number[]> = { floor: [], library: [] };
  // Warm-up: let both reach their optimised code before anything counts.
  for (let i = 0; i < job.requestsPerTrial * 3; i++) for (const app of Object.values(variants)) await request(app);
  for (let trial = 0; trial < job.trials; trial++) {
    for (const name of trial % 2 === 0 ? (['floor', 'library'] as const) : (['library', 'floor'] as const)) {
      const started = process.hrtime.bigint();
      for (let i = 0; i < job.requestsPerTrial; i++) await request(variants[name]);
      times[name].push(Number(process.hrtime.bigint() - started) / job.requestsPerTrial / 1000);
    }
  }
  const floorUs = Math.min(...times.floor);
  const libraryUs = Math.min(...times.library);
  const outcome: OverheadOutcome = {
    floorUs,
    libraryUs,
    ratio: floorUs / libraryUs,
    floorMedianUs: median(times.floor),
    libraryMedianUs: median(times.library),
  };
  process.stdout.write(JSON.stringify(outcome));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});

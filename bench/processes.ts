import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compiledScript, compileLibrary } from './compile.js';
import type { AutocannonJob, AutocannonOutcome, BurstJob, BurstOutcome } from './load.js';
import type { AppConfig, AppKind, FromApp, ToApp } from './apps/protocol.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Where `BENCH_CPU_PROF=1` makes the apps write `.cpuprofile`s of the measured rounds (case 1) and logins (case 4). */
export const PROFILE_DIR = join(here, 'profiles');

function nodeArgs(script: string, extra: string[] = []): string[] {
  return ['--import', 'tsx', ...extra, join(here, script)];
}

/** `BENCH_LIB` for a process: `lib`, else the environment's, compiled (a copy's `lib/index.ts` cannot run on plain `node`). */
function libraryEnv(lib: string | undefined): NodeJS.ProcessEnv {
  const path = lib ?? process.env.BENCH_LIB;
  return path === undefined ? {} : { BENCH_LIB: compileLibrary(path) };
}

/** Apps and the in-process case run compiled, on plain `node` (bench/compile.ts says why). */
function compiledArgs(script: string, extra: string[] = []): string[] {
  return [...extra, compiledScript(script)];
}

/** One app in its own process. */
export class AppProcess<K extends AppKind = AppKind> {
  readonly name: string;
  readonly contender: K;
  readonly child: ChildProcess;
  port = 0;
  #exited = false;

  private constructor(name: string, contender: K, child: ChildProcess) {
    this.name = name;
    this.contender = contender;
    this.child = child;
    child.once('exit', () => (this.#exited = true));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * With `cpus` (a `taskset` CPU list), the app process runs on those CPUs only. `lib` (a path to a copy's
   * `lib/index.ts`) is this process's `BENCH_LIB`, whatever the environment says.
   */
  static async start<K extends AppKind>(name: string, contender: K, cpus?: string, lib?: string): Promise<AppProcess<K>> {
    const flags = process.env.BENCH_APP_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
    const command = [process.execPath, ...compiledArgs('apps/main.ts', flags), contender];
    if (cpus !== undefined) command.unshift('taskset', '-c', cpus);
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'production', ...libraryEnv(lib) };
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env });
    const app = new AppProcess(name, contender, child);
    const message = await app.#next();
    if (message.type !== 'listening') throw new Error(`${name}: unexpected ${message.type}`);
    app.port = message.port;
    return app;
  }

  #next(): Promise<FromApp> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`${this.name} exited (${code}) before answering`));
      this.child.once('exit', onExit);
      this.child.once('message', (message: FromApp) => {
        this.child.off('exit', onExit);
        resolve(message);
      });
    });
  }

  async configure(config: Omit<AppConfig, 'appUrl'>): Promise<void> {
    const reply = this.#next();
    this.child.send({ type: 'configure', config: { ...config, appUrl: this.url } } satisfies ToApp);
    const message = await reply;
    if (message.type !== 'ready') throw new Error(`${this.name} failed to start: ${message.type === 'failed' ? message.message : message.type}`);
  }

  /** The app process's own CPU time so far, in microseconds (user + system). */
  async cpu(): Promise<number> {
    const response = await fetch(`${this.url}/__bench/cpu`);
    const { user, system } = (await response.json()) as { user: number; system: number };
    return user + system;
  }

  /** Starts V8's CPU profiler in the app (only when started with BENCH_CPU_PROF=1). */
  async startProfile(): Promise<void> {
    const response = await fetch(`${this.url}/__bench/profile/start`, { method: 'POST' });
    if (!response.ok) throw new Error(`${this.name}: profiler did not start (${response.status})`);
  }

  /** Stops the profiler and has the app write `bench/profiles/<name>[-<label>].cpuprofile`; returns the path. */
  async stopProfile(label?: string): Promise<string> {
    mkdirSync(PROFILE_DIR, { recursive: true });
    const file = join(PROFILE_DIR, `${this.name}${label === undefined ? '' : `-${label}`}.cpuprofile`);
    const response = await fetch(`${this.url}/__bench/profile/stop`, { method: 'POST', body: file, headers: { 'content-type': 'text/plain' } });
    if (!response.ok) throw new Error(`${this.name}: profiler did not stop (${response.status})`);
    return file;
  }

  async stop(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.send({ type: 'shutdown' } satisfies ToApp);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** The load generator: one child process, kept for the whole run, doing one job at a time. */
export class LoadProcess {
  readonly #child: ChildProcess;
  #queue: Promise<unknown> = Promise.resolve();

  constructor() {
    this.#child = spawn(process.execPath, nodeArgs('load.ts'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  }

  run(job: AutocannonJob): Promise<AutocannonOutcome>;
  run(job: BurstJob): Promise<BurstOutcome>;
  run(job: AutocannonJob | BurstJob): Promise<AutocannonOutcome | BurstOutcome> {
    const next = this.#queue.then(
      () =>
        new Promise<AutocannonOutcome | BurstOutcome>((resolve, reject) => {
          const onExit = (code: number | null) => reject(new Error(`the load generator exited (${code})`));
          this.#child.once('exit', onExit);
          this.#child.once('message', (reply: { ok: true; outcome: AutocannonOutcome | BurstOutcome } | { ok: false; message: string }) => {
            this.#child.off('exit', onExit);
            if (reply.ok) resolve(reply.outcome);
            else reject(new Error(`load generator: ${reply.message}`));
          });
          this.#child.send(job);
        }),
    );
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.disconnect();
    await exited;
  }
}

/** Runs a bench script in a child process with `input` on stdin; resolves with its stdout. */
export function runScript(script: string, input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, compiledArgs(script), { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...libraryEnv(undefined) } });
    const out: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(Buffer.concat(out).toString('utf8')) : reject(new Error(`${script} exited with ${code}`))));
    child.stdin.end(input);
  });
}

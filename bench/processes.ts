import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AutocannonJob, AutocannonOutcome, BurstJob, BurstOutcome } from './load.js';
import type { AppConfig, Contender, FromApp, ToApp } from './apps/protocol.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Where `BENCH_CPU_PROF=1` makes every app process write its `.cpuprofile`. */
export const PROFILE_DIR = join(here, 'profiles');

function nodeArgs(script: string, extra: string[] = []): string[] {
  return ['--import', 'tsx', ...extra, join(here, script)];
}

/** One app in its own process. */
export class AppProcess {
  readonly name: string;
  readonly contender: Contender;
  readonly child: ChildProcess;
  port = 0;
  #exited = false;

  private constructor(name: string, contender: Contender, child: ChildProcess) {
    this.name = name;
    this.contender = contender;
    this.child = child;
    child.once('exit', () => (this.#exited = true));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(name: string, contender: Contender): Promise<AppProcess> {
    const profile = process.env.BENCH_CPU_PROF === '1' ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`] : [];
    if (profile.length > 0) mkdirSync(PROFILE_DIR, { recursive: true });
    const child = spawn(process.execPath, nodeArgs('apps/main.ts', profile).concat(contender), {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, NODE_ENV: 'production' },
    });
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

  async stop(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.send({ type: 'shutdown' } satisfies ToApp);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** Runs one load job in a fresh load-generator process. */
export function runLoad(job: AutocannonJob): Promise<AutocannonOutcome>;
export function runLoad(job: BurstJob): Promise<BurstOutcome>;
export function runLoad(job: AutocannonJob | BurstJob): Promise<AutocannonOutcome | BurstOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, nodeArgs('load.ts'), { stdio: ['pipe', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) {
        reject(new Error(`load generator exited with ${code}`));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(out).toString('utf8')) as AutocannonOutcome | BurstOutcome);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    child.stdin.end(JSON.stringify(job));
  });
}

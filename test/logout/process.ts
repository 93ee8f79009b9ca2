import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { AuthOptions } from '../../lib/index.js';
import { nextLine } from '../helpers/child-process.js';

/** A real second app process (see fixtures/app-process.ts), sharing Redis with the test process. */
export interface AppProcess {
  readonly url: string;
  /** Builds the app with these options; resolves once it serves requests. */
  start(setup: { sessionPrefix: string; auth: Omit<AuthOptions, 'redis'> }): Promise<void>;
  stop(): Promise<void>;
}

const FIXTURE = fileURLToPath(new URL('./fixtures/app-process.ts', import.meta.url));

export async function spawnAppProcess(): Promise<AppProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--no-warnings', FIXTURE], {
    env: process.env,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let url: string;
  try {
    url = (await nextLine(child, /LISTENING (\S+)\n/))[1]!;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    url,
    async start(setup) {
      const ready = nextLine(child, /READY\n/);
      child.stdin?.write(`${JSON.stringify(setup)}\n`);
      await ready;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A private redis-server on an ephemeral port, so that parallel runs never share keys. */
export interface PrivateRedis {
  url: string;
  stop(): Promise<void>;
  /** Sends the server a signal: `SIGSTOP` makes it a Redis that accepts connections and never answers, `SIGCONT` ends that. */
  signal(signal: NodeJS.Signals): void;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function ping(port: number): Promise<boolean> {
  const { Redis } = await import('ioredis');
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  // A refused connection is the answer while the server starts (connect() rejects); without a listener ioredis also
  // prints it as an "Unhandled error event".
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const found = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (found.error || found.status !== 0) {
    throw new Error(
      'redis-server is not installed. Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`; macOS: `brew install redis`), ' +
        'or point the tests at a Redis you run yourself with REDIS_URL=redis://host:port.',
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'oauth-pkce-redis-'));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child: ChildProcess = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'],
      { stdio: 'ignore' },
    );
    let exited = false;
    child.on('exit', () => (exited = true));
    for (let i = 0; i < 100 && !exited; i++) {
      if (await ping(port)) {
        return {
          url: `redis://127.0.0.1:${port}`,
          signal(signal) {
            if (!exited) child.kill(signal);
          },
          async stop() {
            if (!exited) {
              child.kill('SIGCONT');
              await new Promise<void>((resolve) => {
                child.once('exit', () => resolve());
                child.kill('SIGTERM');
              });
            }
            rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
  }
  throw new Error('redis-server did not start on a free port after 5 attempts.');
}

declare global {
  // Shared between jest's global setup and teardown, which run in the same context.
  var __PRIVATE_REDIS__: PrivateRedis | undefined;
}

/**
 * Jest global setup. Without REDIS_URL, starts a private redis-server for this run and hands its URL to the
 * workers through the environment. (Self-contained: jest loads this file outside its module mapper.)
 */
export default async function globalSetup(): Promise<void> {
  if (process.env.REDIS_URL) return;
  const redis = await startPrivateRedis();
  globalThis.__PRIVATE_REDIS__ = redis;
  // Workers start after this and inherit the environment.
  process.env.REDIS_URL = redis.url;
}

/**
 * Entry of one app process: `node bench/.compiled/bench/apps/main.js <contender>`, compiled by bench/compile.ts (plain
 * `node`, as in production; not tsx, whose loader changes how V8 runs the whole process).
 *
 * The process listens first and reports its port, because the provider must register the callback URL before the
 * app can be configured against it; the orchestrator then sends the configuration over IPC.
 */
import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AppConfig, AppKind, FromApp, ToApp } from './protocol.js';

const contender = process.argv[2] as AppKind;
const builders: Record<AppKind, () => Promise<{ build(config: AppConfig): Promise<{ handler: RequestListener; close(): Promise<void> }> }>> = {
  library: () => import('./library.js'),
  floor: () => import('./floor.js'),
  'floor-layers': () => import('./floor.js').then((m) => ({ build: (config: AppConfig) => m.build(config, { layers: true }) })),
  'floor-import': () => importFirst().then(() => import('./floor.js')),
  'floor-fetch': () => import('./floor.js').then((m) => ({ build: (config: AppConfig) => m.build(config, { fetchFirst: true }) })),
  'eoc-cookie': () => import('./eoc.js').then((m) => ({ build: (config: AppConfig) => m.build(config, 'cookie') })),
  'eoc-redis': () => import('./eoc.js').then((m) => ({ build: (config: AppConfig) => m.build(config, 'redis') })),
};

/**
 * What `floor-import` imports before the floor: the library (as the library's app does, without mounting it), or the
 * comma-separated module specifiers of `BENCH_IMPORT` instead, package names or absolute paths (to take the library's
 * import apart: bench/FIXES.md §12).
 */
async function importFirst(): Promise<void> {
  const modules = process.env.BENCH_IMPORT?.split(',').filter(Boolean) ?? [];
  if (modules.length === 0) await (await import('./common.js')).importLibrary();
  for (const module of modules) await import(module);
}

function send(message: FromApp): void {
  process.send?.(message);
}

if (!(contender in builders) || process.send === undefined) {
  console.error(`usage: node bench/.compiled/bench/apps/main.js <${Object.keys(builders).join('|')}> (spawned with an IPC channel)`);
  process.exit(2);
}

let handler: RequestListener = (_req, res) => {
  res.statusCode = 503;
  res.end('not ready');
};
let closeApp: () => Promise<void> = async () => {};
const server = createServer((req, res) => handler(req, res));
server.keepAliveTimeout = 30_000;
server.listen(0, '127.0.0.1', () => send({ type: 'listening', port: (server.address() as AddressInfo).port }));

async function shutdown(): Promise<void> {
  server.closeAllConnections();
  server.close();
  await closeApp().catch(() => undefined);
  // A normal exit, so that --cpu-prof writes its profile.
  process.exit(0);
}

process.on('message', (message: ToApp) => {
  if (message.type === 'configure') {
    builders[contender]()
      .then((module) => module.build(message.config))
      .then((app) => {
        handler = app.handler;
        closeApp = app.close;
        send({ type: 'ready' });
      })
      .catch((err: unknown) => send({ type: 'failed', message: err instanceof Error ? err.message : String(err) }));
  } else if (message.type === 'shutdown') {
    void shutdown();
  }
});
// The orchestrator died: do not linger.
process.on('disconnect', () => void shutdown());

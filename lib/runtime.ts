import { createOnceRegistry, type OnceRegistry } from './once.js';
import type { ResolvedConfig } from './options.js';
import { createRefresher, type Refresher } from './refresh.js';
import { createServerResolver, type ServerResolver } from './server.js';
import { createTokenStore, type TokenStore } from './token-store.js';

/** Everything one `auth()` instance shares between its requests. Built once, in the factory. */
export interface Runtime {
  readonly config: ResolvedConfig;
  readonly server: ServerResolver;
  readonly once: OnceRegistry;
  /** Per-login token versions, the source of truth at refresh time. */
  readonly tokenStore: TokenStore;
  /** Single-flight refresh (per process, and across processes with `redis`). */
  readonly refresher: Refresher;
}

export function createRuntime(config: ResolvedConfig): Runtime {
  const services = {
    config,
    server: createServerResolver(config),
    once: createOnceRegistry(config),
    tokenStore: createTokenStore(config),
  };
  return { ...services, refresher: createRefresher(services) };
}

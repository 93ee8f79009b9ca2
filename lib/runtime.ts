import { createOnceRegistry, type OnceRegistry } from './once.js';
import type { ResolvedConfig } from './options.js';
import { createServerResolver, type ServerResolver } from './server.js';

/** Everything one `auth()` instance shares between its requests. Built once, in the factory. */
export interface Runtime {
  readonly config: ResolvedConfig;
  readonly server: ServerResolver;
  readonly once: OnceRegistry;
}

export function createRuntime(config: ResolvedConfig): Runtime {
  return {
    config,
    server: createServerResolver(config),
    once: createOnceRegistry(config),
  };
}

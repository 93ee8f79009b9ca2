import { createOnceRegistry, type OnceRegistry } from './once.js';
import type { ResolvedConfig } from './options.js';
import { createServerResolver, type ServerResolver } from './server.js';
import { createSessionIndex, type SessionIndex } from './session-index.js';

/** Everything one `auth()` instance shares between its requests. Built once, in the factory. */
export interface Runtime {
  readonly config: ResolvedConfig;
  readonly server: ServerResolver;
  readonly once: OnceRegistry;
  /** `sid`/`sub` → session ids for back-channel logout; only with `redis` and an `openid` scope. */
  readonly sessionIndex: SessionIndex | undefined;
}

export function createRuntime(config: ResolvedConfig): Runtime {
  return {
    config,
    server: createServerResolver(config),
    once: createOnceRegistry(config),
    sessionIndex:
      config.redis !== undefined && config.backchannelLogoutPath !== undefined ? createSessionIndex(config.redis, config.keyPrefix) : undefined,
  };
}

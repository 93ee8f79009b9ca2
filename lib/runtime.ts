import { createIssuerKeys, type IssuerKeys } from './keys.js';
import { createOnceRegistry, type OnceRegistry } from './once.js';
import type { ResolvedConfig } from './options.js';
import { createRefresher, type Refresher } from './refresh.js';
import { createServerResolver, type ServerResolver } from './server.js';
import { createSessionIndex, type SessionIndex } from './session-index.js';
import { createTokenStore, type TokenStore } from './token-store.js';

/** Everything one `auth()` instance shares between its requests. Built once, in the factory. */
export interface Runtime {
  readonly config: ResolvedConfig;
  readonly server: ServerResolver;
  /** The issuer's signing keys, for the JWTs the library verifies itself (logout tokens, refreshed ID tokens). */
  readonly keys: IssuerKeys;
  readonly once: OnceRegistry;
  /** `sid`/`sub` → session ids for back-channel logout; only with `redis` and an `openid` scope. */
  readonly sessionIndex: SessionIndex | undefined;
  /** Per-login token versions, the source of truth at refresh time. */
  readonly tokenStore: TokenStore;
  /** Single-flight refresh (per process, and across processes with `redis`). */
  readonly refresher: Refresher;
}

/**
 * The issuer identifier that scopes what a server names (`sub`, `sid`, a logout token's `jti`) in the Redis keys shared
 * by every app on one Redis and `keyPrefix`: the configured issuer, or `server.issuer` as given.
 */
export function issuerKey(config: ResolvedConfig): string {
  return config.issuer?.href ?? config.server?.issuerIdentifier ?? '';
}

export function createRuntime(config: ResolvedConfig): Runtime {
  const services = {
    config,
    server: createServerResolver(config),
    keys: createIssuerKeys(config),
    once: createOnceRegistry(config),
    sessionIndex:
      config.redis !== undefined && config.backchannelLogoutPath !== undefined
        ? createSessionIndex(config.redis, config.keyPrefix, issuerKey(config))
        : undefined,
    tokenStore: createTokenStore(config),
  };
  // The refresher gets every other service (the refresh request may need them), built first.
  return { ...services, refresher: createRefresher(services) };
}

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import Provider, { type Configuration, type ClientMetadata } from 'oidc-provider';

/** A real OpenID Provider (oidc-provider) running in-process on an ephemeral port. */
export interface TestProvider {
  readonly issuer: string;
  readonly provider: Provider;
  readonly server: Server;
  /** The provider's private signing key (for tests that sign tokens as the provider would). */
  readonly signingKey: JWK;
  /** How often each provider event fired, e.g. `count('grant.success')`. */
  count(event: string): number;
  /** Every recorded event with its arguments. */
  readonly events: Array<{ name: string; args: unknown[] }>;
  close(): Promise<void>;
}

export interface TestProviderOptions {
  clients: ClientMetadata[];
  /** Merged over the defaults below. */
  configuration?: Partial<Configuration>;
  /** Host to use in the issuer URL; `localhost` keeps the provider's cookies apart from the app's (127.0.0.1). */
  host?: string;
}

const RECORDED_EVENTS = [
  'grant.success',
  'grant.error',
  'grant.revoked',
  'server_error',
  'backchannel.success',
  'backchannel.error',
  'end_session.success',
  'authorization_code.consumed',
  'refresh_token.consumed',
  'access_token.destroyed',
  'refresh_token.destroyed',
];

/** Explicit lifetimes in seconds (also keeps oidc-provider from printing a notice per default). */
export const TEST_TTLS = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  IdToken: 3600,
  RefreshToken: 86400,
  Interaction: 600,
  Session: 86400,
  Grant: 86400,
  BackchannelAuthenticationRequest: 600,
  ClientCredentials: 600,
  DeviceCode: 600,
} as const;

export async function startProvider(options: TestProviderOptions): Promise<TestProvider> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${options.host ?? 'localhost'}:${port}`;

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };

  const configuration: Configuration = {
    clients: options.clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: ['test-cookie-key-not-secret'] },
    pkce: { required: () => true },
    claims: { openid: ['sub', 'sid'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({
        sub,
        email: `${sub}@example.com`,
        email_verified: true,
        name: sub.charAt(0).toUpperCase() + sub.slice(1),
        groups: sub === 'admin' ? ['admin'] : ['users'],
      }),
    }),
    features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Claims in the ID token itself, so that req.auth.claims carries email and groups.
    conformIdTokenClaims: false,
    // Explicit lifetimes (also keeps oidc-provider from printing a notice per default).
    ttl: TEST_TTLS,
    ...options.configuration,
  };
  const provider = new Provider(issuer, configuration);
  const events: Array<{ name: string; args: unknown[] }> = [];
  for (const name of RECORDED_EVENTS) {
    (provider as unknown as NodeJS.EventEmitter).on(name, (...args: unknown[]) => events.push({ name, args }));
  }
  server.on('request', provider.callback());

  return {
    issuer,
    provider,
    server,
    signingKey,
    events,
    count: (name) => events.filter((e) => e.name === name).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The token responses the provider sent for `grantType`, oldest first (from its `grant.success` events). */
export function tokenResponses(provider: TestProvider, grantType = 'authorization_code'): Array<{ access_token: string; refresh_token?: string }> {
  return provider.events.flatMap((e) => {
    if (e.name !== 'grant.success') return [];
    const ctx = e.args[0] as { oidc?: { params?: { grant_type?: unknown } }; body?: { access_token: string; refresh_token?: string } };
    return ctx.oidc?.params?.grant_type === grantType && ctx.body !== undefined ? [ctx.body] : [];
  });
}

/** Counts the revocation requests a provider has answered, for revocations the library starts without waiting for them. */
export interface RevocationLog {
  /** Revocation requests answered so far (the provider's answer, or a stub's in front of it). */
  readonly answered: number;
  /** Resolves once `count` requests have been answered in all; rejects after `timeoutMs`. */
  answeredAtLeast(count: number, timeoutMs?: number): Promise<void>;
}

/**
 * Starts counting the provider's answered revocation requests. Install any token stub first (`installTokenStub`
 * replaces the server's request listeners).
 */
export function logRevocations(provider: TestProvider): RevocationLog {
  let answered = 0;
  const path = new URL('/token/revocation', provider.issuer).pathname;
  provider.server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'POST' && new URL(req.url ?? '/', provider.issuer).pathname === path) res.once('finish', () => answered++);
  });
  return {
    get answered() {
      return answered;
    },
    async answeredAtLeast(count, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (answered < count) {
        if (Date.now() >= deadline) throw new Error(`${answered} revocation requests answered, ${count} expected`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
  };
}

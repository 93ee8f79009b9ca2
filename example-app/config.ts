/**
 * The example's configuration, from environment variables only. Without ISSUER it runs on embedded defaults (a dev
 * authorization server in-process); with ISSUER it talks to that provider.
 */

export class ConfigError extends Error {}

interface Common {
  /** Where the web app listens. 0 picks a free port. */
  port: number;
  host: string;
  sessionSecret: string | undefined;
  redisUrl: string | undefined;
}

export interface DevConfig extends Common {
  mode: 'dev';
  /** Access-token lifetime at the dev server, seconds. Short, so that refresh is visible. */
  accessTokenTtl: number;
}

export interface ProviderConfig extends Common {
  mode: 'provider';
  issuer: string;
  clientId: string;
  clientSecret: string | undefined;
  redirectUri: string;
  scope: string;
  /** The `aud` the example API requires; also sent as the RFC 8707 `resource` parameter. */
  apiAudience: string | undefined;
}

export type ExampleConfig = DevConfig | ProviderConfig;

type Env = Record<string, string | undefined>;

function value(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = value(env, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got '${raw}'.`);
  return n;
}

function absoluteUrl(env: Env, name: string, example: string): string | undefined {
  const raw = value(env, name);
  if (raw === undefined) return undefined;
  if (!URL.canParse(raw)) throw new ConfigError(`${name} must be an absolute URL such as ${example}, got '${raw}'.`);
  // Kept exactly as given: an issuer identifier is compared as a string (RFC 8414 §3.3).
  return raw;
}

export function readConfig(env: Env): ExampleConfig {
  const common = {
    host: value(env, 'HOST') ?? '127.0.0.1',
    sessionSecret: value(env, 'SESSION_SECRET'),
    redisUrl: value(env, 'REDIS_URL'),
  };
  const issuer = absoluteUrl(env, 'ISSUER', 'https://idp.example.com');

  if (issuer === undefined) {
    const stray = ['CLIENT_ID', 'CLIENT_SECRET', 'REDIRECT_URI', 'SCOPE', 'API_AUDIENCE'].filter((name) => value(env, name) !== undefined);
    if (stray.length > 0) {
      throw new ConfigError(`${stray.join(', ')} ${stray.length === 1 ? 'is' : 'are'} set but ISSUER is not. Set ISSUER to use your provider, or unset them to use the embedded dev server.`);
    }
    return {
      mode: 'dev',
      ...common,
      port: integer(env, 'PORT', 3000, 0, 65535),
      accessTokenTtl: integer(env, 'DEV_ACCESS_TOKEN_TTL', 30, 1, 86400),
    };
  }

  const clientId = value(env, 'CLIENT_ID');
  if (clientId === undefined) throw new ConfigError('ISSUER is set, so CLIENT_ID is required: the client id registered at your provider.');
  const givenRedirectUri = absoluteUrl(env, 'REDIRECT_URI', 'http://localhost:3000/callback');
  // Listen where the callback points, unless told otherwise (behind a proxy the two differ).
  const redirectPort = givenRedirectUri === undefined ? '' : new URL(givenRedirectUri).port;
  const port = integer(env, 'PORT', redirectPort === '' ? 3000 : Number(redirectPort), 0, 65535);
  const redirectUri = givenRedirectUri ?? `http://localhost:${port}/callback`;
  const apiAudience = value(env, 'API_AUDIENCE');
  if (apiAudience !== undefined && apiAudience === clientId) {
    // An ID token's `aud` is the client id: such an API would accept ID tokens as access tokens.
    throw new ConfigError('API_AUDIENCE must not equal CLIENT_ID: the API would then accept ID tokens.');
  }
  return {
    mode: 'provider',
    ...common,
    port,
    issuer,
    clientId,
    clientSecret: value(env, 'CLIENT_SECRET'),
    redirectUri,
    scope: value(env, 'SCOPE') ?? 'openid profile email',
    apiAudience,
  };
}

/**
 * A misbehaving authorization server, for the cases a correct one (oidc-provider) never produces: ID tokens with bad
 * signatures, `alg: none`, wrong claims; forged `iss` in the authorization response; unacceptable metadata; a token
 * endpoint that fails or hangs. Everything it does is correct unless a test tells it otherwise, so each test changes
 * exactly one thing.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import type { SessionOptions } from 'express-session';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { AuthOptions } from '../../lib/index.js';
import { CLIENT_ID, CLIENT_SECRET, listen, mountApp, type MountedApp } from './app.js';
import { trafficLog, type RecordedRequest, type Traffic } from './security.js';

/** A signing key of the rogue server; `publicJwk` is what its JWKS would publish. */
export interface RogueKey {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

async function makeKey(kid: string, alg: 'RS256' | 'ES256'): Promise<RogueKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

/** How long a `'hang'` reply keeps the request open before dropping the connection without an answer. */
export const HANG_MS = 1500;

/** What the token endpoint answers; `'hang'` never answers (a timeout). */
export type TokenReply = { status: number; body: unknown; headers?: Record<string, string> } | 'hang';

export interface TokenContext {
  /** The authorization request that produced the code being redeemed. */
  readonly authorization: URLSearchParams;
  /** The token request's form body. */
  readonly form: URLSearchParams;
  /** Valid ID-token claims for this grant (iss, sub, aud, exp, iat, nonce). */
  claims(): Record<string, unknown>;
  /** A successful token response carrying `idToken` (default: a valid, correctly signed one; `null`: none). */
  respond(idToken?: string | null): Promise<TokenReply>;
}

export interface SignOptions {
  /** Signing key (default: the current signing key). */
  key?: RogueKey;
  /** Header `alg` (default: the key's). `'none'` produces an unsecured JWT with an empty signature. */
  alg?: string;
  /** Header `kid` (default: the key's); `null` omits it. */
  kid?: string | null;
  /** Raw key material, for HMAC algorithms. */
  secret?: Uint8Array;
}

/** client_secret_basic (RFC 6749 §2.3.1): form-urlencoded id and secret, joined by a colon, in base64. */
function clientAuthenticated(header: string | undefined): boolean {
  const match = /^Basic ([A-Za-z0-9+/=]+)$/.exec(header ?? '');
  if (match === null) return false;
  const [id = '', secret = ''] = Buffer.from(match[1]!, 'base64').toString('utf8').split(':');
  const decode = (value: string) => decodeURIComponent(value.replace(/\+/g, ' '));
  return decode(id) === CLIENT_ID && decode(secret) === CLIENT_SECRET;
}

const b64u = (value: string | Buffer) => Buffer.from(value).toString('base64url');

export class RogueProvider {
  readonly server: Server;
  readonly issuer: string;
  readonly requests: RecordedRequest[] = [];
  readonly traffic: Traffic;
  /** Every code and token handed out, so tests can look for them where they must not be. */
  readonly issued: string[] = [];
  readonly keys: { readonly primary: RogueKey; readonly rotated: RogueKey; readonly unpublished: RogueKey; readonly ec: RogueKey };

  /** Served at /.well-known/openid-configuration; tests edit it. */
  metadata!: Record<string, unknown>;
  /** The keys the JWKS publishes. */
  published!: RogueKey[];
  /** While true, the JWKS answers 503 (the key set is unreachable). */
  keySetDown!: boolean;
  /** The key ID tokens are signed with. */
  signingKey!: RogueKey;
  /** The `iss` of authorization responses: the real issuer, none, or a forged value. */
  responseIss!: string | null;
  /** Token endpoint behaviour after its own checks passed. */
  onToken!: (context: TokenContext) => Promise<TokenReply>;

  readonly #grants = new Map<string, { authorization: URLSearchParams; redeemed: boolean }>();

  private constructor(server: Server, issuer: string, keys: RogueProvider['keys']) {
    this.server = server;
    this.issuer = issuer;
    this.keys = keys;
    this.traffic = trafficLog(this.requests);
    this.reset();
    server.on('request', (req, res) => {
      void this.#handle(req, res).catch((err: unknown) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    });
  }

  static async start(): Promise<RogueProvider> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const keys = {
      primary: await makeKey('rogue-rsa-1', 'RS256'),
      rotated: await makeKey('rogue-rsa-2', 'RS256'),
      unpublished: await makeKey('rogue-rsa-1', 'RS256'),
      ec: await makeKey('rogue-ec-1', 'ES256'),
    };
    return new RogueProvider(server, `http://localhost:${port}`, keys);
  }

  /** Back to a correct server. */
  reset(): void {
    this.metadata = {
      issuer: this.issuer,
      authorization_endpoint: `${this.issuer}/authorize`,
      token_endpoint: `${this.issuer}/token`,
      jwks_uri: `${this.issuer}/jwks`,
      response_types_supported: ['code'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic'],
      scopes_supported: ['openid', 'email'],
      authorization_response_iss_parameter_supported: true,
    };
    this.published = [this.keys.primary, this.keys.ec];
    this.keySetDown = false;
    this.signingKey = this.keys.primary;
    this.responseIss = this.issuer;
    this.onToken = (context) => context.respond();
  }

  /** Signs `claims` as an ID token, or mis-signs it as told. */
  async sign(claims: Record<string, unknown>, options: SignOptions = {}): Promise<string> {
    const key = options.key ?? this.signingKey;
    const alg = options.alg ?? key.alg;
    const kid = options.kid === undefined ? key.kid : options.kid;
    const header = { alg, typ: 'JWT', ...(kid === null ? {} : { kid }) };
    if (alg === 'none') return `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(claims))}.`;
    return new SignJWT(claims).setProtectedHeader(header).sign(options.secret ?? key.privateKey);
  }

  #issue(prefix: string): string {
    const value = `${prefix}-${randomBytes(24).toString('base64url')}`;
    this.issued.push(value);
    return value;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.issuer);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, search: url.search, headers: req.headers, body });

    const json = (status: number, value: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
      res.end(JSON.stringify(value));
    };

    if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') return json(200, this.metadata);
    if (req.method === 'GET' && url.pathname === '/jwks') {
      return this.keySetDown ? json(503, { error: 'temporarily_unavailable' }) : json(200, { keys: this.published.map((k) => k.publicJwk) });
    }
    if (req.method === 'GET' && url.pathname === '/authorize') return this.#authorize(url.searchParams, res);
    if (req.method === 'POST' && url.pathname === '/token') return this.#token(req, new URLSearchParams(body), res, json);
    json(404, { error: 'not_found' });
  }

  /** Approves at once (no login page) and redirects back with a fresh code. */
  #authorize(params: URLSearchParams, res: ServerResponse): void {
    const redirectUri = params.get('redirect_uri');
    if (redirectUri === null) {
      res.writeHead(400).end('redirect_uri missing');
      return;
    }
    const code = this.#issue('code');
    this.#grants.set(code, { authorization: params, redeemed: false });
    const target = new URL(redirectUri);
    target.searchParams.set('code', code);
    const state = params.get('state');
    if (state !== null) target.searchParams.set('state', state);
    if (this.responseIss !== null) target.searchParams.set('iss', this.responseIss);
    res.writeHead(302, { location: target.href }).end();
  }

  async #token(
    req: IncomingMessage,
    form: URLSearchParams,
    res: ServerResponse,
    json: (status: number, value: unknown, headers?: Record<string, string>) => void,
  ): Promise<void> {
    // The parts a correct server checks, so that a library bug (wrong verifier, wrong redirect_uri) still shows.
    if (!clientAuthenticated(req.headers.authorization)) return json(401, { error: 'invalid_client' });
    if (form.get('grant_type') !== 'authorization_code') return json(400, { error: 'unsupported_grant_type' });
    const grant = this.#grants.get(form.get('code') ?? '');
    if (grant === undefined || grant.redeemed) return json(400, { error: 'invalid_grant', error_description: 'unknown or used code' });
    grant.redeemed = true;
    if (form.get('redirect_uri') !== grant.authorization.get('redirect_uri')) return json(400, { error: 'invalid_grant', error_description: 'redirect_uri mismatch' });
    const challenge = createHash('sha256').update(form.get('code_verifier') ?? '').digest('base64url');
    if (grant.authorization.get('code_challenge_method') !== 'S256' || challenge !== grant.authorization.get('code_challenge')) {
      return json(400, { error: 'invalid_grant', error_description: 'PKCE verification failed' });
    }

    const now = Math.floor(Date.now() / 1000);
    const claims = (): Record<string, unknown> => {
      const nonce = grant.authorization.get('nonce');
      return { iss: this.issuer, sub: 'alice', aud: CLIENT_ID, exp: now + 300, iat: now, email: 'alice@example.com', ...(nonce === null ? {} : { nonce }) };
    };
    const context: TokenContext = {
      authorization: grant.authorization,
      form,
      claims,
      respond: async (idToken) => {
        const token = idToken === undefined ? await this.sign(claims()) : idToken;
        if (token !== null) this.issued.push(token);
        return {
          status: 200,
          body: {
            access_token: this.#issue('at'),
            token_type: 'Bearer',
            expires_in: 300,
            refresh_token: this.#issue('rt'),
            scope: grant.authorization.get('scope') ?? 'openid',
            ...(token === null ? {} : { id_token: token }),
          },
        };
      },
    };
    const reply = await this.onToken(context);
    if (reply === 'hang') {
      // Long enough for any client timeout in the tests; dropping the connection then frees the client's socket.
      setTimeout(() => res.destroy(), HANG_MS);
      return;
    }
    json(reply.status, reply.body, reply.headers);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}

export interface RogueStack extends MountedApp {
  rogue: RogueProvider;
  traffic: Traffic;
  close(): Promise<void>;
}

/**
 * An app wired to a rogue provider. Pass `rogue` to share one provider between several apps (each app has its own
 * discovery cache); it is then left running by `close()`.
 */
export async function startRogueStack(
  options: { rogue?: RogueProvider; auth?: Partial<AuthOptions>; session?: Partial<SessionOptions>; routes?: (app: Express) => void } = {},
): Promise<RogueStack> {
  const rogue = options.rogue ?? (await RogueProvider.start());
  const listener = await listen();
  const mounted = mountApp(listener, rogue.issuer, options);
  return {
    rogue,
    ...mounted,
    traffic: rogue.traffic,
    async close() {
      await listener.close();
      if (options.rogue === undefined) await rogue.close();
      mounted.redis.disconnect();
    },
  };
}

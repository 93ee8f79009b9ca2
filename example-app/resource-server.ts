/**
 * A small protected API: a separate Express app (its own port), as a real resource server would be. It trusts
 * nothing from the web app: every request must carry a JWT access token (RFC 9068) signed with one of the
 * issuer's keys, for this API's audience, not expired. Anything else is a 401 with a `WWW-Authenticate` challenge
 * (RFC 6750 §3).
 */
import express, { type Express, type Request, type Response } from 'express';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';

export interface ResourceServerOptions {
  /** The issuer whose keys sign the access tokens (its metadata gives `jwks_uri`). */
  issuer: string;
  /**
   * The `aud` this API requires. Without one the API cannot tell tokens meant for it from tokens meant for anyone
   * else (an ID token, say), so it refuses every request and says why.
   */
  audience: string | undefined;
  /** A scope the token must carry, e.g. `api:read`. */
  requiredScope?: string | undefined;
  /** Require the RFC 9068 `typ: at+jwt` header. The dev server sets it; many providers do not. */
  requireAtJwtType: boolean;
  /** Timeout of the metadata and key-set requests, ms. */
  httpTimeout?: number;
}

const REALM = 'example-api';
// Asymmetric algorithms only: with a shared-secret algorithm a key meant for verifying could forge tokens.
const ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA', 'RS384', 'PS384', 'ES384', 'RS512', 'PS512', 'ES512'];

type KeySet = ReturnType<typeof createRemoteJWKSet>;

class Unauthorized extends Error {
  constructor(
    readonly error: 'invalid_token' | 'invalid_request' | undefined,
    message: string,
  ) {
    super(message);
  }
}

class InsufficientScope extends Error {}

/** Reads the issuer's `jwks_uri` once; a failure is not cached, so the next request tries again. */
function keySetResolver(issuer: string, timeout: number): () => Promise<KeySet> {
  let pending: Promise<KeySet> | undefined;
  return () => {
    pending ??= (async () => {
      const url = new URL('.well-known/openid-configuration', issuer.endsWith('/') ? issuer : `${issuer}/`);
      const response = await fetch(url, { signal: AbortSignal.timeout(timeout), headers: { accept: 'application/json' } });
      if (!response.ok) throw new Error(`issuer metadata: HTTP ${response.status}`);
      const metadata = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
      if (metadata.issuer !== issuer) throw new Error('issuer metadata: `issuer` does not match');
      if (typeof metadata.jwks_uri !== 'string') throw new Error('issuer metadata: no `jwks_uri`');
      return createRemoteJWKSet(new URL(metadata.jwks_uri), { timeoutDuration: timeout });
    })().catch((err: unknown) => {
      pending = undefined;
      throw err;
    });
    return pending;
  };
}

function bearerToken(req: Request): string {
  const header = req.get('authorization');
  if (header === undefined) throw new Unauthorized(undefined, 'No access token: send Authorization: Bearer <token>.');
  const match = /^Bearer ([A-Za-z0-9\-._~+/]+=*)$/i.exec(header);
  if (!match?.[1]) throw new Unauthorized('invalid_request', 'The Authorization header is not a Bearer token.');
  return match[1];
}

function challenge(err: Unauthorized | InsufficientScope, requiredScope: string | undefined): string {
  const params = [`realm="${REALM}"`];
  if (err instanceof InsufficientScope) params.push('error="insufficient_scope"', `scope="${requiredScope ?? ''}"`);
  else if (err.error) params.push(`error="${err.error}"`);
  // The description is our own fixed text, never anything from the token.
  params.push(`error_description="${err.message.replace(/["\\]/g, '')}"`);
  return `Bearer ${params.join(', ')}`;
}

function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'The access token has expired.';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `The access token's \`${err.claim}\` claim is not acceptable.`;
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'The access token signature is invalid.';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return "The access token is not signed with one of the issuer's keys.";
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'The access token uses a signing algorithm this API does not accept.';
  if (err instanceof joseErrors.JOSEError) return 'The access token is not a valid JWT.';
  return 'The access token could not be checked.';
}

/** Builds the API. `GET /hello` answers with who called it; everything needs a valid access token. */
export function createResourceServer(options: ResourceServerOptions): Express {
  const timeout = options.httpTimeout ?? 5000;
  const keySet = keySetResolver(options.issuer, timeout);
  const app = express();
  app.disable('x-powered-by');

  async function verify(req: Request): Promise<JWTPayload> {
    const token = bearerToken(req);
    if (options.audience === undefined) {
      throw new Unauthorized('invalid_token', 'This API has no audience configured (set API_AUDIENCE), so it accepts no token.');
    }
    let jwks: KeySet;
    try {
      jwks = await keySet();
    } catch (err) {
      throw new Error("The issuer's keys could not be fetched.", { cause: err });
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: options.issuer,
        audience: options.audience,
        algorithms: ALGORITHMS,
        requiredClaims: ['exp', 'sub'],
        ...(options.requireAtJwtType ? { typ: 'at+jwt' } : {}),
      }));
    } catch (err) {
      throw new Unauthorized('invalid_token', describe(err));
    }
    if (options.requiredScope !== undefined) {
      const scopes = typeof payload.scope === 'string' ? payload.scope.split(' ') : [];
      if (!scopes.includes(options.requiredScope)) throw new InsufficientScope(`The access token lacks the \`${options.requiredScope}\` scope.`);
    }
    return payload;
  }

  app.get('/hello', async (req: Request, res: Response) => {
    res.set('Cache-Control', 'no-store');
    try {
      const claims = await verify(req);
      res.json({
        message: `Hello, ${String(claims.sub)}! This answer comes from the protected API.`,
        sub: claims.sub,
        client_id: claims.client_id,
        scope: claims.scope,
        token_expires_at: claims.exp,
        served_at: Math.floor(Date.now() / 1000),
      });
    } catch (err) {
      if (err instanceof Unauthorized || err instanceof InsufficientScope) {
        res.status(err instanceof InsufficientScope ? 403 : 401);
        res.set('WWW-Authenticate', challenge(err, options.requiredScope));
        res.json({ error: err instanceof InsufficientScope ? 'insufficient_scope' : (err.error ?? 'unauthorized'), error_description: err.message });
        return;
      }
      // Not the caller's fault: the issuer or its key set is unreachable. Fail closed.
      console.error('example-api:', err instanceof Error ? `${err.message} (${String(err.cause)})` : err);
      res.status(503).json({ error: 'temporarily_unavailable', error_description: "The issuer's keys could not be fetched." });
    }
  });

  app.use((_req: Request, res: Response) => {
    res.status(404).json({ error: 'not_found', error_description: 'Try GET /hello.' });
  });

  return app;
}

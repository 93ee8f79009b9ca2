/**
 * The embedded development authorization server: oidc-provider in-process, with one demo user, visible login and
 * consent pages, short-lived JWT access tokens for the example API (so that refresh is visible), and refresh tokens.
 * For `npm start` without configuration only; a real deployment points ISSUER at a real provider.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors, interactionPolicy, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import { providerConsentPage, providerLoginPage, providerProblemPage, STYLESHEET } from './views.js';

export const DEMO_USER = { login: 'demo', password: 'demo' } as const;

const DEMO_CLAIMS = {
  sub: 'demo',
  name: 'Dee Demo',
  given_name: 'Dee',
  family_name: 'Demo',
  email: 'demo@example.com',
  email_verified: true,
};

/** The scope the example API requires; granted for the API's resource indicator (RFC 8707). */
export const API_SCOPE = 'api:read';

export interface DevProviderOptions {
  /** The app's callback URL, registered for the example client. */
  redirectUri: string;
  /** The example API's identifier: the `aud` of the access tokens. */
  apiAudience: string;
  /** Access-token lifetime in seconds. */
  accessTokenTtl: number;
  /** Host to listen on. @default '127.0.0.1' */
  host?: string;
  /** Port to listen on; 0 picks a free one. @default 0 */
  port?: number;
}

export interface DevProvider {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly server: Server;
  close(): Promise<void>;
}

function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * Asks for the password on every authorization request. With single sign-on the provider would log the user straight
 * back in after they log out of the app, which would hide what logging out does.
 */
function alwaysLoginPolicy() {
  const policy = interactionPolicy.base();
  policy.get('login')?.checks.add(
    new interactionPolicy.Check('dev_no_sso', 'the dev server asks for the password every time', (ctx: KoaContextWithOIDC) =>
      ctx.oidc.result?.login ? interactionPolicy.Check.NO_NEED_TO_PROMPT : interactionPolicy.Check.REQUEST_PROMPT,
    ),
  );
  return policy;
}

export async function startDevProvider(options: DevProviderOptions): Promise<DevProvider> {
  const host = options.host ?? '127.0.0.1';
  const server = createServer();
  // Listen first: the issuer URL contains the port.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${host}:${port}`;

  const clientId = 'example-app';
  const clientSecret = randomBytes(24).toString('base64url');
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: 'dev-key-1', alg: 'RS256', use: 'sig' };
  const ttl = options.accessTokenTtl;

  const configuration: Configuration = {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        client_name: 'the express-oauth-pkce example app',
        redirect_uris: [options.redirectUri],
        post_logout_redirect_uris: [new URL('/', options.redirectUri).href],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    pkce: { required: () => true },
    // Exact expiry, so a 30 s token is dead at 30 s and the app's refresh is what keeps the API call working.
    clockTolerance: 0,
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    claims: { openid: ['sub'], profile: ['name', 'given_name', 'family_name'], email: ['email', 'email_verified'] },
    // The profile page shows the ID token's claims, so put them there rather than only behind userinfo.
    conformIdTokenClaims: false,
    findAccount: async (_ctx, sub) => (sub === DEMO_CLAIMS.sub ? { accountId: sub, claims: async () => ({ ...DEMO_CLAIMS }) } : undefined),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}`, policy: alwaysLoginPolicy() },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      // JWT access tokens (RFC 9068) for the example API, so the API validates them with the issuer's keys alone.
      resourceIndicators: {
        enabled: true,
        defaultResource: () => options.apiAudience,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          if (resource !== options.apiAudience) throw new errors.InvalidTarget();
          return { scope: API_SCOPE, audience: options.apiAudience, accessTokenFormat: 'jwt', accessTokenTTL: ttl, jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Rotation with reuse detection, as RFC 9700 §4.14.2 recommends: the app's refresh must get it right.
    rotateRefreshToken: true,
    ttl: {
      AccessToken: ttl,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 86400,
      Interaction: 600,
      Session: 86400,
      Grant: 86400,
      BackchannelAuthenticationRequest: 600,
      ClientCredentials: 600,
      DeviceCode: 600,
    },
  };
  const provider = new Provider(issuer, configuration);

  const app = express();
  app.disable('x-powered-by');
  app.get('/style.css', (_req, res) => {
    res.type('css').set('Cache-Control', 'max-age=300').send(STYLESHEET);
  });
  const form = express.urlencoded({ extended: false, limit: '4kb', parameterLimit: 10 });
  const interactions = express.Router();
  interactions.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    // No form-action: after the consent POST the provider redirects to the app, on another origin.
    res.set('Content-Security-Policy', "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'");
    next();
  });

  interactions.get('/:uid', async (req: Request, res: Response) => {
    const details = await provider.interactionDetails(req, res);
    const client = await provider.Client.find(String(details.params.client_id));
    const clientName = client?.clientName ?? String(details.params.client_id);
    if (details.prompt.name === 'login') {
      res.type('html').send(providerLoginPage({ uid: details.uid, clientName, demoUser: DEMO_USER }));
      return;
    }
    const missing = details.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    res.type('html').send(
      providerConsentPage({
        uid: details.uid,
        clientName,
        scopes: missing.missingOIDCScope ?? [],
        resources: Object.entries(missing.missingResourceScopes ?? {}).map(([resource, scopes]) => ({ resource, scopes })),
      }),
    );
  });

  interactions.post('/:uid/login', form, async (req: Request, res: Response) => {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name !== 'login') throw new errors.InvalidRequest('this interaction is not asking for a login');
    const login = typeof req.body?.login === 'string' ? req.body.login : '';
    const password = typeof req.body?.password === 'string' ? req.body.password : '';
    if (!(sameSecret(login, DEMO_USER.login) && sameSecret(password, DEMO_USER.password))) {
      const client = await provider.Client.find(String(details.params.client_id));
      res
        .status(401)
        .type('html')
        .send(
          providerLoginPage({
            uid: details.uid,
            clientName: client?.clientName ?? String(details.params.client_id),
            demoUser: DEMO_USER,
            error: 'Wrong username or password.',
            login,
          }),
        );
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: DEMO_CLAIMS.sub } }, { mergeWithLastSubmission: false });
  });

  interactions.post('/:uid/confirm', form, async (req: Request, res: Response) => {
    const details = await provider.interactionDetails(req, res);
    const accountId = details.session?.accountId;
    if (details.prompt.name !== 'consent' || accountId === undefined) {
      throw new errors.InvalidRequest('this interaction is not asking for consent');
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: String(details.params.client_id) });
    if (grant === undefined) throw new errors.InvalidRequest('the grant of this interaction is gone');
    const missing = details.prompt.details as {
      missingOIDCScope?: string[];
      missingOIDCClaims?: string[];
      missingResourceScopes?: Record<string, string[]>;
    };
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const grantId = await grant.save();
    // Merge keeps the login result of this same authorization request, which the always-login check looks for.
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  });

  interactions.post('/:uid/abort', form, async (req: Request, res: Response) => {
    await provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'The user cancelled the sign-in.' },
      { mergeWithLastSubmission: false },
    );
  });

  interactions.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const expired = err instanceof errors.SessionNotFound;
    if (!(err instanceof errors.OIDCProviderError)) console.error(`dev authorization server: ${err instanceof Error ? err.message : String(err)}`);
    res
      .status(expired ? 400 : err instanceof errors.OIDCProviderError ? err.statusCode : 500)
      .type('html')
      .send(
        expired
          ? providerProblemPage('Sign-in expired', 'This sign-in attempt is over or has expired. Go back to the app and log in again.')
          : providerProblemPage('Sign-in problem', 'The sign-in could not continue. Go back to the app and log in again.'),
      );
  });

  app.use('/interaction', interactions);
  app.use(provider.callback());
  server.on('request', app);

  return {
    issuer,
    clientId,
    clientSecret,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

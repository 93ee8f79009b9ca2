/**
 * The example web app: what an application using express-oauth-pkce looks like. It imports the package by its
 * name, as any user would (resolved through the package's own `exports` to the built `dist/`).
 */
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import session, { type Store } from 'express-session';
import { auth, AuthError, requireAuth, type AuthOptions } from 'express-oauth-pkce';
import { apiResultPage, homePage, problemPage, profilePage, STYLESHEET } from './views.js';

export interface ExampleAppOptions {
  auth: AuthOptions;
  sessionStore: Store;
  sessionSecret: string;
  /** The protected API's endpoint the "Call the API" button calls. */
  apiUrl: string;
  /** Origins forms may lead to besides this app (the provider's, for the login redirect after a form). */
  formTargets: string[];
}

function displayName(claims: Record<string, unknown> | undefined): string {
  for (const key of ['name', 'preferred_username', 'email', 'sub']) {
    const v = claims?.[key];
    if (typeof v === 'string' && v !== '') return v;
  }
  return 'you';
}

/** The header's user, when `req.auth` exists (an error may come before `auth()` ran) and holds a login. */
function currentUser(req: Request): { name: string } | undefined {
  const context = (req as { auth?: Request['auth'] }).auth;
  return context?.isAuthenticated ? { name: displayName(context.claims) } : undefined;
}

const SESSION_COOKIE = 'example.sid';

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

export function createApp(options: ExampleAppOptions): Express {
  const app = express();
  app.disable('x-powered-by');

  app.use((_req, res, next) => {
    // Pages are server-rendered with no script at all; the policy says so.
    res.set(
      'Content-Security-Policy',
      `default-src 'none'; style-src 'self'; form-action 'self' ${options.formTargets.join(' ')}; frame-ancestors 'none'; base-uri 'none'`,
    );
    res.set('X-Content-Type-Options', 'nosniff');
    // Not 'no-referrer': with it, browsers send `Origin: null` on same-origin form POSTs. The library's logout check
    // lets `Sec-Fetch-Site: same-origin` win over that, but a browser that sends no Fetch Metadata would get 403 for the
    // log-out button. 'same-origin' still sends no Referer to other sites.
    res.set('Referrer-Policy', 'same-origin');
    next();
  });

  app.get('/style.css', (_req, res) => {
    res.type('css').set('Cache-Control', 'max-age=300').send(STYLESHEET);
  });

  app.use(
    session({
      name: SESSION_COOKIE,
      store: options.sessionStore,
      secret: options.sessionSecret,
      resave: false,
      saveUninitialized: false,
      // 'auto': Secure whenever the request came over https (behind a proxy, also set app.set('trust proxy', …)).
      cookie: { httpOnly: true, sameSite: 'lax', secure: 'auto' },
    }),
  );

  // express-session does not tell the library its cookie's name; without this, logout would clear `connect.sid` and
  // leave this cookie in the browser.
  app.use(auth({ ...options.auth, sessionCookieName: SESSION_COOKIE }));

  app.get('/', (req, res) => {
    res.set('Cache-Control', 'no-store');
    res.type('html').send(homePage(currentUser(req)));
  });

  app.get('/profile', requireAuth(), (req, res) => {
    res.set('Cache-Control', 'no-store');
    const tokens = req.auth.tokens;
    res.type('html').send(
      profilePage(
        { claims: req.auth.claims, expiresAt: tokens?.expiresAt, scope: tokens?.scope, tokenType: tokens?.tokenType, now: nowSeconds() },
        { name: displayName(req.auth.claims) },
      ),
    );
  });

  app.get('/call-api', requireAuth(), async (req, res, next) => {
    res.set('Cache-Control', 'no-store');
    const user = { name: displayName(req.auth.claims) };
    const before = req.auth.tokens?.expiresAt;
    let accessToken: string;
    try {
      // Refreshes first when the token has expired (or is about to), so the call below keeps working.
      accessToken = await req.auth.getAccessToken();
    } catch (err) {
      if (!(err instanceof AuthError)) {
        next(err);
        return;
      }
      const ended = err.status === 401;
      res
        .status(err.status)
        .type('html')
        .send(
          problemPage(
            {
              title: ended ? 'Your login has ended' : 'Could not get an access token',
              message: ended ? `${err.message} The API cannot be called without a valid access token.` : err.message,
              code: err.code,
              loginReturnTo: ended ? '/profile' : undefined,
            },
            ended ? undefined : user,
          ),
        );
      return;
    }
    const after = req.auth.tokens?.expiresAt;

    let status: number;
    let body: string;
    try {
      const response = await fetch(options.apiUrl, {
        headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' },
        signal: AbortSignal.timeout(5000),
      });
      status = response.status;
      const text = await response.text();
      try {
        body = JSON.stringify(JSON.parse(text), null, 2);
      } catch {
        body = text;
      }
    } catch (err) {
      console.error(`example-app: the API at ${options.apiUrl} could not be reached: ${err instanceof Error ? err.message : String(err)}`);
      res
        .status(502)
        .type('html')
        .send(problemPage({ title: 'The API could not be reached', message: `No answer from ${options.apiUrl}.` }, user));
      return;
    }
    res.type('html').send(
      apiResultPage({ apiUrl: options.apiUrl, status, body, renewed: after !== before, expiresAt: after, now: nowSeconds() }, user),
    );
  });

  app.use((req, res) => {
    res
      .status(404)
      .type('html')
      .send(problemPage({ title: 'Not found', message: `There is no page at ${req.path}.` }, currentUser(req)));
  });

  app.use((err: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    // Messages only: a stack trace or an error object could carry request details.
    console.error(`example-app: ${err instanceof Error ? `${err.name}: ${err.message}` : 'unknown error'}`);
    const known = err instanceof AuthError ? err : undefined;
    const page = problemPage(
      { title: 'Something went wrong', message: known?.message ?? 'The app could not answer this request.', code: known?.code },
      currentUser(req),
    );
    res
      .status(known?.status ?? 500)
      .type('html')
      .send(page);
  });

  return app;
}

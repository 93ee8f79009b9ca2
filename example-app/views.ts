/**
 * Server-rendered pages of the example app and of its dev authorization server. No template engine and no
 * front-end build: a tagged template that escapes every interpolated value unless it is already `Html`.
 */

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Markup that is already safe; only {@link html} makes one. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

function render(value: unknown): string {
  if (value instanceof Html) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === undefined || value === null || value === false) return '';
  return escapeHtml(String(value));
}

/** `html\`<p>${text}</p>\``: every value is escaped, arrays are joined, `Html` values are kept as they are. */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += render(value) + (strings[i + 1] ?? '');
  });
  return new Html(out);
}

/** One stylesheet for both servers, served as a file so that the pages' CSP can forbid inline styles. */
export const STYLESHEET = `
:root { --ink: #1d2433; --muted: #5b6475; --line: #e3e7ee; --bg: #f6f8fb; --card: #fff; --accent: #2f5bea;
  --accent-ink: #fff; --ok: #1f7a4d; --ok-bg: #e6f5ed; --bad: #b42318; --bad-bg: #fdecea; --warn-bg: #fff6e0; }
body.provider { --accent: #7a3fd1; --bg: #f7f4fc; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
header { background: var(--card); border-bottom: 1px solid var(--line); }
header .bar { max-width: 760px; margin: 0 auto; padding: 14px 20px; display: flex; align-items: center; gap: 18px; }
header .brand { font-weight: 650; color: var(--ink); text-decoration: none; margin-right: auto; }
header .brand small { display: block; font-weight: 400; color: var(--muted); font-size: 13px; }
header nav a { color: var(--muted); text-decoration: none; }
header nav a:hover { color: var(--accent); }
header form { margin: 0; }
main { max-width: 760px; margin: 28px auto 48px; padding: 0 20px; }
h1 { font-size: 28px; line-height: 1.25; margin: 0 0 8px; }
h2 { font-size: 18px; margin: 0 0 12px; }
p { margin: 0 0 12px; }
.lead { color: var(--muted); font-size: 17px; margin-bottom: 22px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 20px 22px; margin: 0 0 18px; }
.narrow { max-width: 420px; margin-left: auto; margin-right: auto; }
.button, button { display: inline-block; font: inherit; font-weight: 600; border: 1px solid var(--accent); background: var(--accent);
  color: var(--accent-ink); padding: 9px 18px; border-radius: 8px; text-decoration: none; cursor: pointer; }
.button.secondary, button.secondary { background: transparent; color: var(--accent); }
.button:hover, button:hover { filter: brightness(1.08); }
.actions { display: flex; gap: 10px; flex-wrap: wrap; align-items: center; margin-top: 16px; }
.actions form { margin: 0; }
label { display: block; font-weight: 600; margin: 0 0 4px; }
input[type=text], input[type=password] { width: 100%; font: inherit; padding: 9px 11px; border: 1px solid var(--line);
  border-radius: 8px; margin: 0 0 14px; background: #fff; }
input:focus { outline: 2px solid var(--accent); outline-offset: 1px; }
table { width: 100%; border-collapse: collapse; font-size: 15px; }
th, td { text-align: left; padding: 7px 10px 7px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { width: 34%; font-weight: 600; }
td code, p code, li code { overflow-wrap: anywhere; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 14px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; overflow-x: auto; margin: 0; }
.muted { color: var(--muted); }
.mt { margin-top: 14px; }
.small { font-size: 14px; }
.badge { display: inline-block; font-size: 13px; font-weight: 600; padding: 2px 9px; border-radius: 999px; margin-left: 6px; vertical-align: 2px; }
.badge.ok { color: var(--ok); background: var(--ok-bg); }
.badge.bad { color: var(--bad); background: var(--bad-bg); }
.badge.info { color: var(--accent); background: var(--bg); border: 1px solid var(--line); }
.notice { border-radius: 8px; padding: 10px 14px; margin: 0 0 16px; background: var(--warn-bg); }
.notice.bad { background: var(--bad-bg); color: var(--bad); }
ul.scopes { padding-left: 20px; margin: 0 0 8px; }
.banner { background: var(--accent); color: #fff; text-align: center; font-size: 14px; padding: 6px 12px; }
`;

export interface PageOptions {
  title: string;
  body: Html;
  /** Shown in the header of app pages: a greeting and the log-out button. */
  user?: { name: string } | undefined;
}

/** The example app's page frame. */
export function appPage({ title, body, user }: PageOptions): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · express-oauth-pkce example</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header><div class="bar">
  <a class="brand" href="/">express-oauth-pkce<small>example app</small></a>
  <nav><a href="/">Home</a> &nbsp; <a href="/profile">Profile</a></nav>
  ${user ? html`<span class="muted small">${user.name}</span>${logoutButton()}` : ''}
</div></header>
<main>
${body}
</main>
</body>
</html>`.value;
}

/** Logging out is a POST (a link would let any page log the user out); the library answers 303 to `/`. */
export function logoutButton(): Html {
  return html`<form method="post" action="/logout"><button type="submit" class="secondary">Log out</button></form>`;
}

export function homePage(user: { name: string } | undefined): string {
  const body = user
    ? html`<h1>Welcome back, ${user.name}</h1>
<p class="lead">You are logged in. Your session cookie is an opaque id; the tokens stay on the server.</p>
<div class="card">
  <h2>Your profile</h2>
  <p>See the claims of your ID token, and call the protected API with your access token.</p>
  <div class="actions"><a class="button" href="/profile">Open your profile</a></div>
</div>`
    : html`<h1>Log in with your provider</h1>
<p class="lead">This app uses <strong>express-oauth-pkce</strong>: the OAuth 2.0 authorization code flow with PKCE,
on a server-side session. The browser only ever holds an opaque session cookie.</p>
<div class="card">
  <h2>Try it</h2>
  <p>Log in, look at your profile, call a protected API with your access token, wait for the token to expire and
  call it again: the app renews the token without asking you to log in.</p>
  <div class="actions"><a class="button" href="/login?returnTo=%2Fprofile">Log in</a></div>
</div>`;
  return appPage({ title: 'Home', body, user });
}

/** "12:04:31 (in 27 s)" / "(3 s ago)". */
export function formatExpiry(expiresAt: number | undefined, now: number): Html {
  if (expiresAt === undefined) return html`<span class="muted">not said by the server</span>`;
  const time = new Date(expiresAt * 1000).toLocaleTimeString('en-GB');
  const delta = expiresAt - now;
  return delta > 0
    ? html`${time} <span class="badge ok">in ${delta} s</span>`
    : html`${time} <span class="badge bad">expired ${-delta} s ago</span>`;
}

const TIME_CLAIMS = new Set(['exp', 'iat', 'auth_time', 'nbf', 'updated_at']);

function claimValue(name: string, value: unknown): Html {
  if (TIME_CLAIMS.has(name) && typeof value === 'number') {
    return html`${value} <span class="muted small">(${new Date(value * 1000).toISOString().replace('T', ' ').slice(0, 19)} UTC)</span>`;
  }
  return html`<code>${typeof value === 'string' ? value : JSON.stringify(value)}</code>`;
}

export interface ProfileView {
  claims: Record<string, unknown> | undefined;
  expiresAt: number | undefined;
  scope: string | undefined;
  tokenType: string | undefined;
  now: number;
}

export function profilePage(view: ProfileView, user: { name: string }): string {
  const claims = Object.entries(view.claims ?? {});
  const body = html`<h1>${user.name}</h1>
<p class="lead">This page is behind <code>requireAuth()</code>. What you see comes from the validated ID token.</p>
<div class="card">
  <h2>Access token</h2>
  <table>
    <tr><th>Expires</th><td data-testid="expires-at" data-expires-at="${view.expiresAt ?? ''}">${formatExpiry(view.expiresAt, view.now)}</td></tr>
    <tr><th>Type</th><td>${view.tokenType ?? ''}</td></tr>
    <tr><th>Scope</th><td><code>${view.scope ?? ''}</code></td></tr>
  </table>
  <p class="muted small mt">The token itself never leaves the server: the page shows only when it expires.</p>
  <div class="actions">
    <form method="get" action="/call-api"><button type="submit">Call the API</button></form>
  </div>
</div>
<div class="card">
  <h2>ID token claims</h2>
  ${claims.length === 0
    ? html`<p class="muted">No ID token claims (the scope has no <code>openid</code>).</p>`
    : html`<table data-testid="claims">${claims.map(([name, value]) => html`<tr><th>${name}</th><td>${claimValue(name, value)}</td></tr>`)}</table>`}
</div>`;
  return appPage({ title: 'Profile', body, user });
}

export interface ApiResultView {
  apiUrl: string;
  status: number;
  body: string;
  /** True when `getAccessToken()` renewed the token during this request. */
  renewed: boolean;
  expiresAt: number | undefined;
  now: number;
}

export function apiResultPage(view: ApiResultView, user: { name: string }): string {
  const ok = view.status >= 200 && view.status < 300;
  const body = html`<h1>The API answered <span data-testid="api-status">${view.status}</span>${ok ? html`<span class="badge ok">OK</span>` : html`<span class="badge bad">refused</span>`}</h1>
<p class="lead">The app called <code>${view.apiUrl}</code> from the server with
<code>Authorization: Bearer &lt;await req.auth.getAccessToken()&gt;</code>.</p>
<div class="card">
  <h2>Access token used</h2>
  <table>
    <tr><th>Expires</th><td data-testid="expires-at" data-expires-at="${view.expiresAt ?? ''}">${formatExpiry(view.expiresAt, view.now)}</td></tr>
    <tr><th>Renewed for this call</th><td data-testid="renewed">${view.renewed
      ? html`yes <span class="badge ok">refreshed</span>`
      : html`no <span class="muted small">(it was still valid)</span>`}</td></tr>
  </table>
</div>
<div class="card">
  <h2>Response body</h2>
  <pre data-testid="api-body">${view.body}</pre>
  <div class="actions">
    <form method="get" action="/call-api"><button type="submit">Call the API again</button></form>
    <a class="button secondary" href="/profile">Back to the profile</a>
  </div>
</div>`;
  return appPage({ title: `API ${view.status}`, body, user });
}

export interface ProblemView {
  title: string;
  message: string;
  code?: string | undefined;
  /** Offer to log in again, coming back to this path. */
  loginReturnTo?: string | undefined;
}

export function problemPage(view: ProblemView, user?: { name: string }): string {
  const body = html`<h1>${view.title}</h1>
<div class="card">
  <p>${view.message}</p>
  ${view.code ? html`<p class="muted small">Error code: <code data-testid="error-code">${view.code}</code></p>` : ''}
  <div class="actions">
    ${view.loginReturnTo ? html`<a class="button" href="/login?returnTo=${encodeURIComponent(view.loginReturnTo)}">Log in again</a>` : ''}
    <a class="button secondary" href="/">Home</a>
  </div>
</div>`;
  return appPage({ title: view.title, body, user });
}

// ---- Dev authorization server pages ----

function providerPage(title: string, body: Html): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Dev authorization server</title>
<link rel="stylesheet" href="/style.css">
</head>
<body class="provider">
<div class="banner">Embedded development authorization server (oidc-provider) — not part of your app</div>
<main>
${body}
</main>
</body>
</html>`.value;
}

export interface LoginView {
  uid: string;
  clientName: string;
  demoUser: { login: string; password: string };
  error?: string | undefined;
  login?: string | undefined;
}

export function providerLoginPage(view: LoginView): string {
  return providerPage(
    'Sign in',
    html`<div class="card narrow">
  <h1>Sign in</h1>
  <p class="muted">to continue to <strong>${view.clientName}</strong></p>
  ${view.error ? html`<p class="notice bad" role="alert">${view.error}</p>` : ''}
  <form method="post" action="/interaction/${view.uid}/login">
    <label for="login">Username</label>
    <input id="login" name="login" type="text" value="${view.login ?? ''}" autocomplete="username" autofocus required>
    <label for="password">Password</label>
    <input id="password" name="password" type="password" autocomplete="current-password" required>
    <div class="actions">
      <button type="submit">Sign in</button>
      <button type="submit" class="secondary" formaction="/interaction/${view.uid}/abort" formnovalidate>Cancel</button>
    </div>
  </form>
  <p class="muted small mt">Demo user: <code>${view.demoUser.login}</code> / <code>${view.demoUser.password}</code>.
  This server asks for the password every time (no single sign-on), so logging out of the app is visible.</p>
</div>`,
  );
}

export interface ConsentView {
  uid: string;
  clientName: string;
  scopes: string[];
  resources: Array<{ resource: string; scopes: string[] }>;
}

export function providerConsentPage(view: ConsentView): string {
  return providerPage(
    'Allow access',
    html`<div class="card narrow">
  <h1>Allow access?</h1>
  <p><strong>${view.clientName}</strong> asks to:</p>
  <ul class="scopes">
    ${view.scopes.map((scope) => html`<li>${SCOPE_TEXT[scope] ?? html`use <code>${scope}</code>`}</li>`)}
    ${view.resources.map((r) => html`<li>call the API at <code>${r.resource}</code> (${r.scopes.join(', ')})</li>`)}
  </ul>
  <div class="actions">
    <form method="post" action="/interaction/${view.uid}/confirm"><button type="submit">Allow</button></form>
    <form method="post" action="/interaction/${view.uid}/abort"><button type="submit" class="secondary">Deny</button></form>
  </div>
</div>`,
  );
}

const SCOPE_TEXT: Record<string, string> = {
  openid: 'know who you are',
  profile: 'see your name',
  email: 'see your email address',
  offline_access: 'stay connected while you are away',
};

export function providerProblemPage(title: string, message: string): string {
  return providerPage(title, html`<div class="card narrow"><h1>${title}</h1><p>${message}</p></div>`);
}

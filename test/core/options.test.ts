import { describe, expect, test } from '@jest/globals';
import { Cluster, Redis } from 'ioredis';
import { auth, type AuthOptions } from '../../lib/index.js';
import { resolveOptions } from '../../lib/options.js';

const valid: AuthOptions = {
  issuer: 'https://idp.example.com',
  clientId: 'app',
  clientSecret: 'secret',
  redirectUri: 'https://app.example.com/callback',
};

function attempt(overrides: Record<string, unknown>, remove: string[] = []): () => unknown {
  const options: Record<string, unknown> = { ...valid, ...overrides };
  for (const key of remove) delete options[key];
  return () => auth(options as unknown as AuthOptions);
}

describe('auth() options', () => {
  test('valid options give a router', () => {
    expect(typeof auth(valid)).toBe('function');
    const { clientSecret: _secret, ...publicClient } = valid;
    expect(typeof auth({ ...publicClient, issuer: new URL('https://idp.example.com') })).toBe('function');
    expect(resolveOptions(publicClient).clientAuthMethod).toBe('none');
  });

  // `clientSecret: process.env.CLIENT_SECRET` with the variable unset: not a public client by accident, found only
  // after a user logged in (invalid_client), but a startup error.
  test('a clientSecret or privateKey present but undefined is refused (an unset environment variable?)', () => {
    expect(attempt({ clientSecret: undefined })).toThrow(TypeError);
    expect(attempt({ clientSecret: undefined })).toThrow(
      'express-oauth-pkce: `clientSecret` is undefined (an unset environment variable?): pass the secret, or leave the option out for a public client.',
    );
    expect(attempt({ privateKey: undefined }, ['clientSecret'])).toThrow(/`privateKey` is undefined \(an unset environment variable.*\): pass the key, or leave the option out/);
  });

  test.each<[string, Record<string, unknown>, string[], RegExp]>([
    ['no options at all', {}, ['issuer', 'clientId', 'clientSecret', 'redirectUri'], /issuer` is required/],
    ['missing clientId', {}, ['clientId'], /clientId` is required/],
    ['onError not a function', { onError: 'console' }, [], /`onError` must be a function: \(err, req\) => void/],
    ['loginParams not a function', { loginParams: { prompt: 'login' } }, [], /`loginParams` must be a function: \(req\) => \(\{ prompt: 'select_account' \}\)/],
    ['empty clientId', { clientId: '' }, [], /clientId` is required/],
    ['missing issuer', {}, ['issuer'], /issuer` is required/],
    ['relative issuer', { issuer: 'idp.example.com' }, [], /absolute URL/],
    ['http issuer without allowInsecureRequests', { issuer: 'http://idp.example.com' }, [], /allowInsecureRequests: true/],
    ['issuer with a query', { issuer: 'https://idp.example.com/?x=1' }, [], /query or fragment/],
    ['missing redirectUri', {}, ['redirectUri'], /redirectUri` is required/],
    ['relative redirectUri', { redirectUri: '/callback' }, [], /absolute URL/],
    ['redirectUri with a fragment', { redirectUri: 'https://app.example.com/cb#x' }, [], /fragment/],
    ['http redirectUri on a public host', { redirectUri: 'http://app.example.com/callback' }, [], /uses http:/],
    ['unknown option', { clientSecrett: 'x' }, [], /unknown option `clientSecrett` \(did you mean `clientSecret`\?\)/],
    ['bad clientAuthMethod', { clientAuthMethod: 'magic' }, [], /clientAuthMethod` must be one of/],
    ['secret with method none', { clientAuthMethod: 'none' }, [], /remove `clientSecret`/],
    ['basic without secret', { clientAuthMethod: 'client_secret_basic' }, ['clientSecret'], /needs `clientSecret`/],
    ['empty secret', { clientSecret: '' }, [], /non-empty string/],
    ['bad scope', { scope: 'openid  email' }, [], /space-separated/],
    ['protected authorization param', { authorizationParams: { state: 'x' } }, [], /set by the library itself/],
    ['scope in authorizationParams', { authorizationParams: { scope: 'x' } }, [], /use the `scope` option/],
    ['non-string authorization param', { authorizationParams: { prompt: 1 } }, [], /must be a string/],
    ['a redis that is not a client', { redis: 'redis://localhost' }, [], /ioredis client/],
    ['unknown route', { routes: { callback: '/cb' } }, [], /unknown route `routes.callback`/],
    ['route that is not a path', { routes: { login: 'login' } }, [], /routes.login` must be a plain path/],
    ['route with a pattern', { routes: { login: '/login/:id' } }, [], /routes.login` must be a plain path/],
    // At '/', the logout route would answer every visit to the home page with 405 and take every form posted there.
    ['route at the root', { routes: { logout: '/' } }, [], /routes.logout` must be a plain path/],
    ['route with an empty segment', { routes: { login: '//login' } }, [], /routes.login` must be a plain path/],
    ['colliding routes', { routes: { login: '/callback' } }, [], /^express-oauth-pkce: `routes.login` and the callback path of `redirectUri` are both '\/callback': the route paths must differ/],
    ['three colliding routes', { routes: { login: '/auth', logout: '/auth' }, redirectUri: 'https://app.example.com/auth' }, [], /`routes.login`, `routes.logout` and the callback path of `redirectUri` are all '\/auth'/],
    // As written: parsing would add a '/' to the bare origin.
    ['http issuer without allowInsecureRequests, quoted as written', { issuer: 'http://idp.example.com' }, [], /`issuer` 'http:\/\/idp\.example\.com' uses http:/],
    ['negative httpTimeout', { httpTimeout: -1 }, [], /httpTimeout` must be a non-negative number/],
    ['string clockTolerance', { clockTolerance: '5' }, [], /clockTolerance` must be a non-negative number/],
    // The token request repeats redirect_uri without the query: every login would end in invalid_grant.
    ['redirectUri with a query', { redirectUri: 'https://app.example.com/callback?tenant=1' }, [], /redirectUri` must not have a query string.*'https:\/\/app\.example\.com\/callback'/],
    ['redirectUri with an empty query', { redirectUri: 'https://app.example.com/callback?' }, [], /redirectUri` must not have a query string/],
    ['redirectUri URL with a query', { redirectUri: new URL('https://app.example.com/callback?tenant=1') }, [], /must not have a query string/],
    ['redirectUri with an empty fragment', { redirectUri: 'https://app.example.com/callback#' }, [], /fragment/],
    // Every visit to the home page would be taken for a callback.
    ['redirectUri with the path /', { redirectUri: 'https://app.example.com/' }, [], /has the path '\/'.*'https:\/\/app\.example\.com\/callback'/],
    ['redirectUri without a path', { redirectUri: 'https://app.example.com' }, [], /has the path '\/'/],
    ['postLogoutRedirect on the callback', { postLogoutRedirect: '/callback' }, [], /postLogoutRedirect` '\/callback' is the callback path/],
    ['postLogoutRedirect on the callback, with a query', { postLogoutRedirect: '/callback?bye=1' }, [], /is the callback path/],
    ['postLogoutRedirect on the logout route', { postLogoutRedirect: '/logout' }, [], /is the `routes.logout` path/],
    ['postLogoutRedirect on the logout return route', { idpLogout: true, postLogoutRedirect: '/logout/callback' }, [], /is the `routes.postLogout` path/],
    ['max_age that is not a number', { authorizationParams: { max_age: 'soon' } }, [], /max_age` must be a whole number of seconds.*got "soon"/],
    ['negative max_age', { authorizationParams: { max_age: '-1' } }, [], /max_age` must be a whole number/],
    ['fractional max_age', { authorizationParams: { max_age: '1.5' } }, [], /max_age` must be a whole number/],
    ['empty max_age', { authorizationParams: { max_age: '' } }, [], /max_age` must be a whole number/],
    ['max_age as a number', { authorizationParams: { max_age: 300 } }, [], /write '300' instead of 300/],
    ['max_age without openid', { scope: 'email', authorizationParams: { max_age: '0' } }, [], /max_age` is checked against the ID token's `auth_time`.*add 'openid'/],
    // A URL object always ends a bare origin with '/', and server.issuer is compared as a string with the ID token's iss.
    [
      'server.issuer as a bare-origin URL object',
      { server: { issuer: new URL('https://idp.example.com'), authorizationEndpoint: 'https://idp.example.com/auth', tokenEndpoint: 'https://idp.example.com/token', jwksUri: 'https://idp.example.com/jwks' } },
      ['issuer'],
      /server.issuer` .*cannot tell 'https:\/\/idp\.example\.com' from 'https:\/\/idp\.example\.com\/'.*as a string/,
    ],
  ])('%s → TypeError naming the fix', (_name, overrides, remove, message) => {
    expect(attempt(overrides, remove)).toThrow(TypeError);
    expect(attempt(overrides, remove)).toThrow(message);
  });

  test('max_age: a whole number of seconds as a string, with openid', () => {
    for (const maxAge of ['0', '1', '3600']) {
      expect(typeof auth({ ...valid, authorizationParams: { max_age: maxAge } })).toBe('function');
    }
  });

  test('redirectUri with a path of its own, and postLogoutRedirect on an ordinary page, are accepted', () => {
    expect(typeof auth({ ...valid, redirectUri: 'https://app.example.com/auth/callback', postLogoutRedirect: '/goodbye?from=logout' })).toBe('function');
    expect(typeof auth({ ...valid, redirectUri: new URL('https://app.example.com/callback') })).toBe('function');
    // The login route is a page: landing there after logout starts a new login, which some apps want.
    expect(typeof auth({ ...valid, postLogoutRedirect: '/login' })).toBe('function');
  });

  test('server.issuer: a string is kept exactly; a URL object with a path is unambiguous', () => {
    const server = { authorizationEndpoint: 'https://idp.example.com/auth', tokenEndpoint: 'https://idp.example.com/token', jwksUri: 'https://idp.example.com/jwks' };
    const base = { clientId: 'app', clientSecret: 'secret', redirectUri: 'https://app.example.com/callback' };
    for (const issuer of ['https://idp.example.com', 'https://idp.example.com/', 'https://idp.example.com/realms/app']) {
      expect(resolveOptions({ ...base, server: { ...server, issuer } }).server?.issuerIdentifier).toBe(issuer);
    }
    const withPath = new URL('https://idp.example.com/realms/app');
    expect(resolveOptions({ ...base, server: { ...server, issuer: withPath } }).server?.issuerIdentifier).toBe('https://idp.example.com/realms/app');
  });

  // openid-client fetches a '/.well-known/' URL as the metadata document itself and then skips comparing the metadata's
  // `issuer` with the configured one (RFC 8414 §3.3): any issuer would be accepted. Refused, naming the identifier.
  test.each<[string | URL, RegExp]>([
    ['https://idp.example.com/.well-known/openid-configuration', /give the issuer identifier, not the discovery document URL.*would accept metadata naming any issuer.*Here that would be 'https:\/\/idp\.example\.com',/],
    ['https://idp.example.com/realms/app/.well-known/openid-configuration', /Here that would be 'https:\/\/idp\.example\.com\/realms\/app',/],
    ['https://idp.example.com/.well-known/oauth-authorization-server/tenant', /Here that would be 'https:\/\/idp\.example\.com\/tenant', with `discovery: 'oauth2'`/],
    ['https://idp.example.com/.well-known/jwks.json', /not an issuer identifier.*without its '\/\.well-known\/…' part/],
    [new URL('https://idp.example.com/.well-known/openid-configuration'), /`issuer` 'https:\/\/idp\.example\.com\/\.well-known\/openid-configuration' is a '\/\.well-known\/' document URL/],
  ])('an issuer that is a /.well-known/ document URL is refused: %s', (issuer, message) => {
    expect(attempt({ issuer })).toThrow(TypeError);
    expect(attempt({ issuer })).toThrow(message);
  });

  test('server.issuer that is a /.well-known/ document URL is refused too (ID tokens never carry one in iss)', () => {
    const server = { issuer: 'https://idp.example.com/.well-known/openid-configuration', authorizationEndpoint: 'https://idp.example.com/auth', tokenEndpoint: 'https://idp.example.com/token', jwksUri: 'https://idp.example.com/jwks' };
    expect(attempt({ server }, ['issuer'])).toThrow(/`server.issuer` .* not an issuer identifier.*Here that would be 'https:\/\/idp\.example\.com'/);
  });

  // redirect_uri is sent as the parsed URL's href; a string that parsing changes would not match its registration at a
  // server that compares exactly (RFC 9700 §4.1.3). The message gives the form to register and configure.
  test.each<[string, string]>([
    ['https://App.Example.com:443/cb', 'https://app.example.com/cb'],
    ['https://App.example.com/callback', 'https://app.example.com/callback'],
    ['https://app.example.com/call back', 'https://app.example.com/call%20back'],
    ['https://app.example.com/auth/../callback', 'https://app.example.com/callback'],
    [' https://app.example.com/callback', 'https://app.example.com/callback'],
    ['http://localhost:80/callback', 'http://localhost/callback'],
  ])('redirectUri %j, which URL parsing changes, is refused naming %j', (given, sent) => {
    expect(attempt({ redirectUri: given })).toThrow(TypeError);
    expect(attempt({ redirectUri: given })).toThrow(
      `express-oauth-pkce: \`redirectUri\` '${given}' would be sent as '${sent}' (URL parsing normalises it), and servers compare the redirect URI with the registered one exactly (RFC 9700 §4.1.3): register and configure '${sent}'.`,
    );
    // The normalised form is accepted, as a string or as a URL object (sent as its href).
    expect(resolveOptions({ ...valid, redirectUri: sent }).redirectUri.href).toBe(sent);
    expect(resolveOptions({ ...valid, redirectUri: new URL(given) }).redirectUri.href).toBe(sent);
  });

  // The library calls Redis the ioredis way (set(k, v, 'PX', ms, 'NX'), eval(script, numKeys, ...)); node-redis has a
  // `set` too, with another signature, so a `set` check alone let it through and silently broke single use of state.
  test('redis: an ioredis Redis or Cluster is accepted; node-redis and other objects are refused, naming ioredis', () => {
    const client = new Redis({ lazyConnect: true });
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true });
    try {
      expect(resolveOptions({ ...valid, redis: client }).redis).toBe(client);
      expect(resolveOptions({ ...valid, redis: cluster }).redis).toBe(cluster);
    } finally {
      client.disconnect();
      cluster.disconnect();
    }
    const fn = () => undefined;
    // The shape of a node-redis v4/v5 client (not installed here): camel-case and upper-case commands, no defineCommand.
    const nodeRedis = { set: fn, get: fn, del: fn, eval: fn, multi: fn, sAdd: fn, SADD: fn, sRem: fn, sMembers: fn, sendCommand: fn, connect: fn };
    expect(attempt({ redis: nodeRedis })).toThrow(TypeError);
    expect(attempt({ redis: nodeRedis })).toThrow(
      /`redis` must be an ioredis client, a `Redis` or `Cluster` from 'ioredis' \(the one connect-redis 8 takes too\).*This looks like a node-redis client: it has no defineCommand, sadd, srem, smembers, and its set\(\) and eval\(\) read the arguments .* differently, which would silently break single use of `state`/,
    );
    expect(attempt({ redis: { set: fn } })).toThrow(/must be an ioredis client.*This object has no defineCommand, get, del, eval, multi, sadd, srem, smembers\./);
  });

  // The likeliest wrong names: typos, snake_case from the protocol, other libraries' names (Passport, express-openid-connect).
  test.each<[string, string]>([
    ['redirectUrl', 'redirectUri'],
    ['redirect_uri', 'redirectUri'],
    ['callbackURL', 'redirectUri'],
    ['client_id', 'clientId'],
    ['clientID', 'clientId'],
    ['client_secret', 'clientSecret'],
    ['issuerBaseURL', 'issuer'],
    ['token_endpoint_auth_method', 'clientAuthMethod'],
    ['post_logout_redirect_uri', 'postLogoutRedirect'],
    ['redirect', 'redirectUri'],
    // Two pairs of swapped letters: two edits, not four, so still within reach of a guess.
    ['cleint_secert', 'clientSecret'],
  ])('unknown option `%s`: did you mean `%s`?', (name, meant) => {
    expect(attempt({ [name]: 'x' })).toThrow(`unknown option \`${name}\` (did you mean \`${meant}\`?)`);
  });

  test.each<[string, string]>([
    ['authorization_endpoint', 'authorizationEndpoint'],
    ['authorizationURL', 'authorizationEndpoint'],
    ['tokenURL', 'tokenEndpoint'],
    ['jwks_uri', 'jwksUri'],
    ['end_session_endpoint', 'endSessionEndpoint'],
  ])('unknown option `server.%s`: did you mean `server.%s`?', (name, meant) => {
    const server = { authorizationEndpoint: 'https://idp.example.com/auth', tokenEndpoint: 'https://idp.example.com/token', [name]: 'https://idp.example.com/x' };
    expect(attempt({ server, scope: 'read' }, ['issuer'])).toThrow(`unknown option \`server.${name}\` (did you mean \`server.${meant}\`?)`);
  });

  test('a name like no option gets no guess', () => {
    expect(attempt({ colour: 'blue' })).toThrow(/unknown option `colour`\. Known options:/);
    // Two edits from `dpop`: for a name this short that is no likeness, and "did you mean `dpop`" would mislead.
    expect(attempt({ app: {} })).toThrow(/unknown option `app`\. Known options:/);
  });

  test('a non-object is refused', () => {
    expect(() => auth(undefined as unknown as AuthOptions)).toThrow(/takes an options object/);
  });

  test('http is allowed for loopback redirect URIs and, with allowInsecureRequests, for the issuer', () => {
    expect(typeof auth({ ...valid, redirectUri: 'http://127.0.0.1:3000/callback' })).toBe('function');
    expect(typeof auth({ ...valid, issuer: 'http://localhost:4000', allowInsecureRequests: true })).toBe('function');
  });
});

// Each of these configurations would start and then leak or misroute something, or fail far from its cause; the
// startup check is the only place they are caught.
describe('auth() options: unsafe or broken values that must not start', () => {
  const byHand = { authorizationEndpoint: 'https://idp.example.com/auth', tokenEndpoint: 'https://idp.example.com/token' };

  test.each<[string, Record<string, unknown>, string[], RegExp]>([
    // Codes and tokens would go to something other than an http(s) server.
    ['an issuer with another scheme', { issuer: 'ftp://idp.example.com' }, [], /`issuer` must be an http\(s\) URL, got 'ftp:'/],
    ['a redirectUri with another scheme', { redirectUri: 'javascript://app.example.com/callback' }, [], /`redirectUri` must be an http\(s\) URL, got 'javascript:'/],
    ['a server endpoint with another scheme', { server: { ...byHand, tokenEndpoint: 'file:///etc/token' }, scope: 'read' }, ['issuer'], /`server.tokenEndpoint` must be an http\(s\) URL/],
    // Credentials in a URL end up in logs, error messages and Referer headers.
    ['an issuer with a user and password', { issuer: 'https://user:pass@idp.example.com' }, [], /`issuer` must not contain credentials/],
    ['an issuer with only a password', { issuer: 'https://:pass@idp.example.com' }, [], /`issuer` must not contain credentials/],
    ['a redirectUri with credentials', { redirectUri: 'https://user@app.example.com/callback' }, [], /`redirectUri` must not contain credentials/],
    ['an empty redirectUri (an unset variable)', { redirectUri: '' }, [], /`redirectUri` is required/],
    ['an empty issuer', { issuer: '' }, [], /`issuer` is required/],
    ['an issuer with a fragment', { issuer: 'https://idp.example.com/#tenant' }, [], /`issuer` must not have a query or fragment/],
    ['a server endpoint with a fragment', { server: { ...byHand, tokenEndpoint: 'https://idp.example.com/token#x' }, scope: 'read' }, ['issuer'], /`server.tokenEndpoint` must not have a fragment/],
    // A bare '?' or '#' leaves URL's `search`/`hash` empty but stays in the href: the issuer compared with the
    // metadata's (and with `iss`) would carry it, and no server's does.
    ['an issuer with an empty query', { issuer: 'https://idp.example.com?' }, [], /`issuer` must not have a query or fragment/],
    ['an issuer with an empty fragment', { issuer: 'https://idp.example.com/realms/app#' }, [], /`issuer` must not have a query or fragment/],
    ['a server.issuer with an empty query', { server: { ...byHand, issuer: 'https://idp.example.com/?', jwksUri: 'https://idp.example.com/jwks' } }, ['issuer'], /`server.issuer` must not have a query or fragment/],
    ['a server endpoint with an empty fragment', { server: { ...byHand, authorizationEndpoint: 'https://idp.example.com/auth#' }, scope: 'read' }, ['issuer'], /`server.authorizationEndpoint` must not have a fragment/],
    ['a server without its authorization endpoint', { server: { tokenEndpoint: byHand.tokenEndpoint }, scope: 'read' }, ['issuer'], /`server.authorizationEndpoint` is required/],
    // 'false' from an environment variable is truthy: taken as true it would let http: through.
    ['allowInsecureRequests as a string', { allowInsecureRequests: 'false', issuer: 'http://idp.example.com' }, [], /`allowInsecureRequests` must be a boolean/],
    // Hosts that only look like loopback: http: there goes over the network.
    ['an http redirectUri on a host starting with a loopback address', { redirectUri: 'http://127.0.0.1.evil.example/callback' }, [], /`redirectUri` 'http:\/\/127\.0\.0\.1\.evil\.example\/callback' uses http:/],
    ['an http redirectUri on a host starting with 127', { redirectUri: 'http://127.evil.example/callback' }, [], /uses http:/],
    ['an http redirectUri on a host starting with localhost', { redirectUri: 'http://localhost.evil.example/callback' }, [], /uses http:/],
    ['a clientSecret that is not a string', { clientSecret: 12345 }, [], /`clientSecret` must be a non-empty string/],
    ['an httpTimeout of 0', { httpTimeout: 0 }, [], /`httpTimeout` must be at least 1 millisecond/],
    ['an infinite httpTimeout', { httpTimeout: Number.POSITIVE_INFINITY }, [], /`httpTimeout` must be a non-negative number of milliseconds/],
    ['a clockTolerance that is NaN', { clockTolerance: Number.NaN }, [], /`clockTolerance` must be a non-negative number of seconds/],
    ['a keyPrefix that is not a string', { keyPrefix: 7 }, [], /`keyPrefix` must be a string/],
    // RFC 6749 §3.3 leaves '"' and '\' out of scope tokens: a server would refuse the login with invalid_scope.
    ['a scope with a double quote', { scope: 'openid "email"' }, [], /`scope` must be space-separated scope tokens/],
    ['a scope with a backslash', { scope: 'openid read\\write' }, [], /`scope` must be space-separated scope tokens/],
    ['routes as an array', { routes: ['/login'] }, [], /`routes` must be an object/],
    ['authorizationParams as an array', { authorizationParams: [['prompt', 'login']] }, [], /`authorizationParams` must be an object of string values/],
    ['a max_age too large to compare', { authorizationParams: { max_age: '9'.repeat(20) } }, [], /max_age` must be a whole number of seconds/],
    ['max_age 0 as a number', { authorizationParams: { max_age: 0 } }, [], /write '0' instead of 0/],
  ])('%s → TypeError naming the fix', (_name, overrides, remove, message) => {
    expect(attempt(overrides, remove)).toThrow(TypeError);
    expect(attempt(overrides, remove)).toThrow(message);
  });

  // client_id would start another client's login; request and request_uri would carry a request object the library
  // did not write (its own state, nonce, PKCE and redirect_uri, RFC 9101 §6.3); the others are what PKCE, state and
  // nonce are made of (row 30 of SECURITY.md tests those at a real server).
  test.each(['client_id', 'request', 'request_uri', 'response_mode', 'redirect_uri', 'code_challenge', 'code_challenge_method', 'nonce', 'state', 'response_type', 'dpop_jkt'])(
    'authorizationParams.%s is refused at startup',
    (name) => {
      expect(attempt({ authorizationParams: { [name]: 'x' } })).toThrow(TypeError);
      expect(attempt({ authorizationParams: { [name]: 'x' } })).toThrow(`\`authorizationParams.${name}\` is set by the library itself; remove it.`);
    },
  );

  test('loopback redirect URIs may use http:, and with allowInsecureRequests any host may', () => {
    for (const redirectUri of ['http://localhost:3000/callback', 'http://[::1]:3000/callback', 'http://127.1.2.3/callback']) {
      expect(resolveOptions({ ...valid, redirectUri }).redirectUri.href).toBe(redirectUri);
    }
    expect(resolveOptions({ ...valid, redirectUri: 'http://app.example.com/callback', allowInsecureRequests: true }).redirectUri.protocol).toBe('http:');
  });

  // The library calls all of these; an object missing even one would fail only when that call comes.
  test.each(['defineCommand', 'smembers'])('redis: an object missing only %s is refused', (name) => {
    const fn = () => undefined;
    const almost: Record<string, unknown> = { defineCommand: fn, set: fn, get: fn, del: fn, eval: fn, multi: fn, sadd: fn, srem: fn, smembers: fn };
    delete almost[name];
    expect(attempt({ redis: almost })).toThrow(new RegExp(`must be an ioredis client.*This object has no ${name}\\.`));
  });

  test("'openid' counts as a scope token only on its own", () => {
    expect(resolveOptions({ ...valid, scope: 'openid email' }).openid).toBe(true);
    expect(resolveOptions({ ...valid, scope: 'notopenid email' }).openid).toBe(false);
  });

  test('the documented defaults', () => {
    expect(resolveOptions(valid)).toMatchObject({
      discovery: 'oidc',
      clientAuthMethod: 'client_secret_basic',
      scope: 'openid',
      openid: true,
      allowInsecureRequests: false,
      pushedAuthorizationRequests: false,
      dpop: false,
      keyPrefix: 'oauth-pkce:',
      loginPath: '/login',
      logoutPath: '/logout',
      callbackPath: '/callback',
      httpTimeout: 5000,
      clockTolerance: 30,
      refreshSkew: 60,
      authorizationParams: {},
    });
  });
});

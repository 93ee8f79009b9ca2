import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, test } from '@jest/globals';
import { resolveOptions } from '../../lib/options.js';
import { createServerResolver } from '../../lib/server.js';
import { clientKeyPair } from './support.js';

const base = { clientId: 'app', redirectUri: 'https://app.example.com/callback' };
const server = { authorizationEndpoint: 'https://github.com/login/oauth/authorize', tokenEndpoint: 'https://github.com/login/oauth/access_token' };

function failure(options: Record<string, unknown>): string {
  try {
    resolveOptions(options);
  } catch (err) {
    expect(err).toBeInstanceOf(TypeError);
    return (err as Error).message;
  }
  throw new Error('resolveOptions accepted the options');
}

describe('issuer or server: exactly one', () => {
  test.each([
    ['neither', { ...base }, /`issuer` is required.*server: \{ authorizationEndpoint, tokenEndpoint \}/],
    ['both', { ...base, issuer: 'https://idp.example.com', server }, /either `issuer`.*or `server`.*not both/],
    ['discovery with server', { ...base, server, scope: 'repo', discovery: 'oauth2' }, /`discovery` applies to `issuer`/],
    ['an unknown discovery', { ...base, issuer: 'https://idp.example.com', discovery: 'rfc8414' }, /`discovery` must be 'oidc' or 'oauth2'/],
  ])('%s', (_name, options, message) => {
    expect(failure(options)).toMatch(message);
  });

  test('a server by hand needs both endpoints, as https, and names unknown members', () => {
    expect(failure({ ...base, scope: 'repo', server: { authorizationEndpoint: server.authorizationEndpoint } })).toMatch(/`server.tokenEndpoint` is required/);
    expect(failure({ ...base, scope: 'repo', server: { ...server, tokenEndpoint: 'http://idp.example.com/token' } })).toMatch(
      /`server.tokenEndpoint` 'http:\/\/idp.example.com\/token' uses http:/,
    );
    expect(failure({ ...base, scope: 'repo', server: { ...server, userInfoEndpoint: 'https://api.github.com/user' } })).toMatch(
      /unknown option `server.userInfoEndpoint` \(did you mean `server.userinfoEndpoint`\?\)/,
    );
  });

  test('openid in scope needs server.issuer and server.jwksUri; a plain OAuth scope needs neither', () => {
    expect(failure({ ...base, server })).toMatch(/has 'openid'.*set `server.issuer`/);
    expect(failure({ ...base, server: { ...server, issuer: 'https://idp.example.com' } })).toMatch(/has 'openid'.*set `server.jwksUri`/);
    const config = resolveOptions({ ...base, server, scope: 'read:user' });
    expect(config.issuer).toBeUndefined();
    expect(config.openid).toBe(false);
    expect(config.server?.tokenEndpoint.href).toBe(server.tokenEndpoint);
  });

  test('server.issuer is kept exactly as given (ID tokens compare it as a string)', () => {
    const config = resolveOptions({ ...base, server: { ...server, issuer: 'https://idp.example.com', jwksUri: 'https://idp.example.com/jwks' } });
    expect(config.server?.issuerIdentifier).toBe('https://idp.example.com');
    expect(config.discovery).toBe('oidc');
  });

  test("discovery: 'oauth2' with an issuer", () => {
    expect(resolveOptions({ ...base, issuer: 'https://idp.example.com', discovery: 'oauth2' }).discovery).toBe('oauth2');
  });
});

describe('privateKey', () => {
  test('a private JWK with a kid selects private_key_jwt', async () => {
    const { privateJwk } = await clientKeyPair('ES256', 'k1');
    const config = resolveOptions({ ...base, issuer: 'https://idp.example.com', privateKey: privateJwk });
    expect(config.clientAuthMethod).toBe('private_key_jwt');
    expect(config.privateKey).toMatchObject({ kid: 'k1', alg: 'ES256', audience: 'issuer' });
  });

  test('a PEM with its kid; the algorithm follows the key', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ format: 'pem', type: 'pkcs1' }).toString();
    const config = resolveOptions({ ...base, issuer: 'https://idp.example.com', privateKey: { key: pem, kid: 'rsa', alg: 'PS256', audience: 'token_endpoint' } });
    expect(config.privateKey).toMatchObject({ kid: 'rsa', alg: 'PS256', audience: 'token_endpoint' });
  });

  // A server that registered the key for one algorithm refuses assertions signed with another (invalid_client at the
  // first login): the one the key names, or the only one its curve allows, is what it signs with.
  test('the algorithm a JWK names is kept; an EC or OKP key signs with the algorithm of its curve', async () => {
    const { privateJwk } = await clientKeyPair('RS256', 'rsa');
    const named = resolveOptions({ ...base, issuer: 'https://idp.example.com', privateKey: { ...privateJwk, alg: 'PS384' } });
    expect(named.privateKey?.alg).toBe('PS384');
    const curves: Array<[string, string]> = [
      ['P-256', 'ES256'],
      ['P-384', 'ES384'],
      ['P-521', 'ES512'],
    ];
    for (const [namedCurve, alg] of curves) {
      const pem = generateKeyPairSync('ec', { namedCurve }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
      expect(resolveOptions({ ...base, issuer: 'https://idp.example.com', privateKey: { key: pem, kid: namedCurve } }).privateKey?.alg).toBe(alg);
    }
    const ed25519 = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
    expect(resolveOptions({ ...base, issuer: 'https://idp.example.com', privateKey: { ...ed25519, kid: 'ed' } }).privateKey?.alg).toBe('EdDSA');
  });

  test('mistakes are TypeErrors that never quote the key', async () => {
    const { privateJwk, publicJwk } = await clientKeyPair('RS256', 'k1');
    const { kid: _kid, ...withoutKid } = privateJwk;
    const options = { ...base, issuer: 'https://idp.example.com' };
    const messages = [
      failure({ ...options, privateKey: withoutKid }),
      failure({ ...options, privateKey: publicJwk }),
      failure({ ...options, privateKey: { key: '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----', kid: 'x' } }),
      failure({ ...options, privateKey: { key: privateJwk, alg: 'ES256' } }),
      failure({ ...options, privateKey: { key: privateJwk, audience: 'token' } }),
      failure({ ...options, privateKey: { key: privateJwk, password: 'x' } }),
      failure({ ...options, privateKey: privateJwk, clientSecret: 'secret' }),
      failure({ ...options, privateKey: privateJwk, clientAuthMethod: 'client_secret_basic', clientSecret: 'secret' }),
      failure({ ...options, clientAuthMethod: 'private_key_jwt' }),
    ];
    expect(messages).toEqual([
      expect.stringMatching(/`privateKey` needs a `kid`/),
      expect.stringMatching(/not a readable unencrypted private key/),
      expect.stringMatching(/not a readable unencrypted private key/),
      expect.stringMatching(/`privateKey.alg` "ES256" does not fit this RSA key; use one of RS256, RS384, RS512, PS256, PS384, PS512/),
      expect.stringMatching(/`privateKey.audience` must be 'issuer' or 'token_endpoint'/),
      expect.stringMatching(/unknown option `privateKey.password`/),
      expect.stringMatching(/'private_key_jwt'` signs with `privateKey`: remove `clientSecret`/),
      expect.stringMatching(/`privateKey` is only used with `clientAuthMethod: 'private_key_jwt'`/),
      expect.stringMatching(/'private_key_jwt'` needs `privateKey`/),
    ]);
    for (const message of messages) {
      expect(message).not.toContain(privateJwk.d);
      expect(message).not.toContain(privateJwk.n);
    }
  });

  test('an empty kid, a key that cannot sign, and a key in an array are refused', async () => {
    const { privateJwk } = await clientKeyPair('ES256', 'k1');
    const options = { ...base, issuer: 'https://idp.example.com' };
    expect(failure({ ...options, privateKey: { key: privateJwk, kid: '' } })).toMatch(/`privateKey` needs a `kid`/);
    // X25519 is a key-agreement key: it has no signature algorithm for a client assertion.
    const x25519 = generateKeyPairSync('x25519').privateKey.export({ format: 'jwk' });
    expect(failure({ ...options, privateKey: { ...x25519, kid: 'x' } })).toMatch(/`privateKey` must be an RSA, EC \(P-256, P-384, P-521\) or Ed25519 key/);
    const pem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    expect(failure({ ...options, privateKey: { key: [pem], kid: 'x' } })).toMatch(/not a readable unencrypted private key/);
  });
});

describe('PAR, DPoP and fetchUser options', () => {
  const options = { ...base, issuer: 'https://idp.example.com' };

  test('defaults', () => {
    expect(resolveOptions(options)).toMatchObject({ pushedAuthorizationRequests: false, dpop: false, fetchUser: undefined });
  });

  test.each([
    [{ pushedAuthorizationRequests: 'yes' }, /`pushedAuthorizationRequests` must be a boolean/],
    [{ dpop: 1 }, /`dpop` must be a boolean/],
    [{ fetchUser: { url: 'https://api.github.com/user' } }, /`fetchUser` must be a function/],
    [{ authorizationParams: { dpop_jkt: 'x' } }, /`authorizationParams.dpop_jkt` is set by the library itself/],
  ])('%j is refused', (extra, message) => {
    expect(failure({ ...options, ...extra })).toMatch(message);
  });

  test('PAR with a server by hand needs its PAR endpoint', () => {
    expect(failure({ ...base, scope: 'repo', server, pushedAuthorizationRequests: true })).toMatch(
      /`pushedAuthorizationRequests: true` needs `server.pushedAuthorizationRequestEndpoint`/,
    );
  });
});

// openid-client takes whole seconds; rounding down would cut every request to the server short of what was configured
// (1500 ms would be 1 s), and 0 would mean no time at all.
describe('httpTimeout, as the requests to the authorization server get it', () => {
  test.each([
    [200, 1],
    [1000, 1],
    [1500, 2],
    [5000, 5],
  ])('%i ms is %i s', async (httpTimeout, seconds) => {
    const config = resolveOptions({ ...base, clientSecret: 'secret', scope: 'repo', server, httpTimeout });
    const configuration = await createServerResolver(config)();
    expect(configuration.timeout).toBe(seconds);
  });
});

// What openid-client is given is all it knows of a server by hand: an endpoint left out would be a feature silently
// off (no RP-initiated logout, no revocation, no userinfo), not an error.
test('a server by hand: every endpoint given reaches the metadata openid-client uses', async () => {
  const endpoints = {
    issuer: 'https://idp.example.com',
    authorizationEndpoint: 'https://idp.example.com/authorize',
    tokenEndpoint: 'https://idp.example.com/token',
    revocationEndpoint: 'https://idp.example.com/revoke',
    userinfoEndpoint: 'https://idp.example.com/userinfo',
    jwksUri: 'https://idp.example.com/jwks',
    endSessionEndpoint: 'https://idp.example.com/logout',
    pushedAuthorizationRequestEndpoint: 'https://idp.example.com/par',
  };
  const configuration = await createServerResolver(resolveOptions({ ...base, clientSecret: 'secret', server: endpoints }))();
  expect(configuration.serverMetadata()).toMatchObject({
    issuer: endpoints.issuer,
    authorization_endpoint: endpoints.authorizationEndpoint,
    token_endpoint: endpoints.tokenEndpoint,
    revocation_endpoint: endpoints.revocationEndpoint,
    userinfo_endpoint: endpoints.userinfoEndpoint,
    jwks_uri: endpoints.jwksUri,
    end_session_endpoint: endpoints.endSessionEndpoint,
    pushed_authorization_request_endpoint: endpoints.pushedAuthorizationRequestEndpoint,
  });
});

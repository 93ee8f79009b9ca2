import { afterAll, describe, expect, test } from '@jest/globals';
import { Redis } from 'ioredis';
import { resolveOptions } from '../../lib/options.js';

const base = { issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback' };
// resolveOptions only checks that `redis` is an ioredis client; it never connects (nothing is sent to it here).
const redis = new Redis({ lazyConnect: true });
afterAll(() => redis.disconnect());

describe('logout options', () => {
  test('defaults: local logout to /, no RP-initiated logout, connect.sid, back-channel only with redis', () => {
    const config = resolveOptions(base);
    expect(config).toMatchObject({
      postLogoutRedirect: '/',
      idpLogout: false,
      sessionCookieName: 'connect.sid',
      sessionIndexTtl: 14 * 24 * 60 * 60,
      postLogoutPath: undefined,
      backchannelLogoutPath: undefined,
    });
    expect(resolveOptions({ ...base, redis }).backchannelLogoutPath).toBe('/backchannel-logout');
    expect(resolveOptions({ ...base, redis, scope: 'email' }).backchannelLogoutPath).toBeUndefined();
    expect(resolveOptions({ ...base, idpLogout: true }).postLogoutPath).toBe('/logout/callback');
  });

  test('custom paths and values are kept', () => {
    const config = resolveOptions({
      ...base,
      redis,
      idpLogout: true,
      postLogoutRedirect: '/bye?x=1',
      sessionCookieName: '__Host-sid',
      sessionIndexTtl: 3600,
      routes: { postLogout: '/auth/logged-out', backchannelLogout: '/auth/bcl' },
    });
    expect(config).toMatchObject({
      postLogoutRedirect: '/bye?x=1',
      sessionCookieName: '__Host-sid',
      sessionIndexTtl: 3600,
      postLogoutPath: '/auth/logged-out',
      backchannelLogoutPath: '/auth/bcl',
    });
  });

  test('idpLogout with a server configured by hand needs its end_session_endpoint, as PAR needs its endpoint', () => {
    const server = { authorizationEndpoint: 'https://idp.example.com/auth', tokenEndpoint: 'https://idp.example.com/token' };
    const byHand = { clientId: 'app', redirectUri: 'https://app.example.com/callback', scope: 'read', server };
    expect(() => resolveOptions({ ...byHand, idpLogout: true })).toThrow(TypeError);
    expect(() => resolveOptions({ ...byHand, idpLogout: true })).toThrow(
      /`idpLogout: true` sends the browser to the server's end_session_endpoint, and `server` names none: set `server.endSessionEndpoint`, or remove `idpLogout`/,
    );
    const withEndpoint = resolveOptions({ ...byHand, idpLogout: true, server: { ...server, endSessionEndpoint: 'https://idp.example.com/logout' } });
    expect(withEndpoint.server?.endSessionEndpoint?.href).toBe('https://idp.example.com/logout');
    expect(withEndpoint.postLogoutPath).toBe('/logout/callback');
    // Discovered metadata is only known at runtime: a server without the endpoint then gets local logout only.
    expect(resolveOptions({ ...base, idpLogout: true }).idpLogout).toBe(true);
  });

  // The index entries must outlive the sessions they point to for a while; below a minute, or a fraction of a second
  // that Redis would round, is refused, and the bound itself is allowed.
  test('sessionIndexTtl: whole seconds, at least 60', () => {
    expect(resolveOptions({ ...base, sessionIndexTtl: 60 }).sessionIndexTtl).toBe(60);
    for (const sessionIndexTtl of [59, 60.5]) {
      expect(() => resolveOptions({ ...base, sessionIndexTtl })).toThrow('`sessionIndexTtl` must be a whole number of seconds, at least 60.');
    }
  });

  // Without 'openid' there are no ID tokens, so no sid/sub to index: the route would be silently left unmounted.
  test('routes.backchannelLogout with redis but without openid in scope is refused', () => {
    expect(() => resolveOptions({ ...base, redis, scope: 'email', routes: { backchannelLogout: '/bcl' } })).toThrow(/routes\.backchannelLogout.*an `openid` scope/);
  });

  test.each([
    ['postLogoutRedirect to another origin', { postLogoutRedirect: 'https://evil.example/' }, /postLogoutRedirect.*same-origin path/],
    ['a protocol-relative postLogoutRedirect', { postLogoutRedirect: '//evil.example' }, /postLogoutRedirect/],
    ['a relative postLogoutRedirect', { postLogoutRedirect: 'bye' }, /postLogoutRedirect/],
    ['a non-boolean idpLogout', { idpLogout: 'yes' }, /idpLogout.*boolean/],
    ['routes.postLogout without idpLogout', { routes: { postLogout: '/x' } }, /routes\.postLogout.*idpLogout: true/],
    ['routes.backchannelLogout without redis', { routes: { backchannelLogout: '/bcl' } }, /routes\.backchannelLogout.*needs `redis`/],
    ['a sessionCookieName with a space', { sessionCookieName: 'my sid' }, /sessionCookieName/],
    ['a tiny sessionIndexTtl', { sessionIndexTtl: 5 }, /sessionIndexTtl/],
    ['a postLogout path equal to the logout path', { idpLogout: true, routes: { postLogout: '/logout' } }, /`routes.logout` \(by default\) and `routes.postLogout` are both '\/logout': the route paths must differ/],
    ['an unknown route', { routes: { logoutCallback: '/x' } }, /unknown route `routes.logoutCallback`/],
    // The back-channel route takes only POSTs from the server: a browser landing there after logout would get a 405 page.
    ['postLogoutRedirect on the back-channel logout route', { redis, postLogoutRedirect: '/backchannel-logout' }, /`postLogoutRedirect` '\/backchannel-logout' is the `routes.backchannelLogout` path/],
  ])('%s is refused at startup', (_name, extra, message) => {
    expect(() => resolveOptions({ ...base, ...extra })).toThrow(message);
  });
});

import { expect, test } from '@jest/globals';
import { publicTokens, sessionCopy, toStoredTokens, unpackTokens, type StoredTokens } from '../../lib/tokens.js';

const full: StoredTokens = {
  accessToken: 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl',
  tokenType: 'Bearer',
  expiresAt: 1_900_000_000,
  lifetime: 3600,
  scope: 'openid email offline_access',
  refreshToken: 'rt-0123456789',
  idToken: 'header.payload.signature',
};

test('the session copy is one string that unpacks to the set without its raw ID token', () => {
  const copy = sessionCopy(full);
  expect(typeof copy).toBe('string');
  expect(copy).not.toContain(full.idToken);
  const { idToken: _left, ...rest } = full;
  expect(unpackTokens(copy)).toEqual(rest);
});

test('absent optional fields stay absent, and what survives JSON (the session store) unpacks the same', () => {
  const minimal: StoredTokens = { accessToken: 'a', tokenType: 'DPoP' };
  expect(unpackTokens(sessionCopy(minimal))).toEqual(minimal);
  const noExpiry: StoredTokens = { accessToken: 'a', tokenType: 'Bearer', scope: '', refreshToken: 'r' };
  expect(unpackTokens(sessionCopy(noExpiry))).toEqual(noExpiry);
  const stored = JSON.parse(JSON.stringify({ tokens: sessionCopy(full) })) as { tokens: unknown };
  expect(unpackTokens(stored.tokens)?.accessToken).toBe(full.accessToken);
});

test('times are whole seconds in plain digits, whatever the server said', () => {
  const absurd = unpackTokens(sessionCopy({ accessToken: 'a', tokenType: 'Bearer', expiresAt: 1e21, lifetime: 1e21 }));
  expect(absurd).toEqual({ accessToken: 'a', tokenType: 'Bearer', expiresAt: Number.MAX_SAFE_INTEGER, lifetime: Number.MAX_SAFE_INTEGER });
  expect(unpackTokens(sessionCopy({ accessToken: 'a', tokenType: 'Bearer', expiresAt: 1000.7, lifetime: 59.9 }))).toMatchObject({ expiresAt: 1000, lifetime: 59 });
  expect(unpackTokens('t1|||1:B1:a--')).toEqual({ accessToken: 'a', tokenType: 'B' });
  expect(unpackTokens('t1|99999999999999999||1:B1:a--')).toBeUndefined();
  // Whatever a number turned into, the copy stays readable: not a number is left out, below zero is zero.
  expect(unpackTokens(sessionCopy({ accessToken: 'a', tokenType: 'Bearer', expiresAt: Number.NaN, lifetime: Infinity }))).toEqual({ accessToken: 'a', tokenType: 'Bearer' });
  expect(unpackTokens(sessionCopy({ accessToken: 'a', tokenType: 'Bearer', expiresAt: -5, lifetime: -1 }))).toEqual({
    accessToken: 'a',
    tokenType: 'Bearer',
    expiresAt: 0,
    lifetime: 0,
  });
});

test('any character a server puts into a token is kept as it is', () => {
  for (const odd of ['a|b|c', '12:34', '-', '', ' spaced  out ', '"quoted" \\ back', 'ünïcødé 🔑', 't1|0|0|', '5:abcde']) {
    const tokens: StoredTokens = { accessToken: odd, tokenType: 'Bearer', expiresAt: 5, scope: odd, refreshToken: odd };
    expect(unpackTokens(sessionCopy(tokens))).toEqual(tokens);
  }
});

test('a value this library did not write unpacks to undefined, never to made-up tokens', () => {
  const good = sessionCopy({ accessToken: 'abc', tokenType: 'Bearer', expiresAt: 10, lifetime: 5 });
  const damaged = [
    good.slice(0, -1),
    `${good}x`,
    good.replace('t1', 't2'),
    `x${good}`,
    // The format tag only counts at the start, not inside a value that merely contains one.
    'abcde5:t1|||1:a--',
    good.replace('|10|', '|1e3|'),
    good.replace('|10|', '|-10|'),
    // More digits than the library writes, although the value is small.
    good.replace('|10|', '|00000000000000000010|'),
    // Digits the reader takes, but beyond a safe integer; in either time.
    good.replace('|10|', '|9999999999999999|'),
    good.replace('|5|', '|9999999999999999|'),
    't1|||-3:abc--',
    't1|||6:Bearer-',
    't1|||6:Bearer99:short--',
    't1|||6:Bearer:abc--',
    '',
    42,
    null,
    undefined,
    ['t1'],
  ];
  for (const value of damaged) expect(unpackTokens(value)).toBeUndefined();
});

test('the unpacked object of sessions written before the packed copy is still read', () => {
  const legacy = { accessToken: 'a', tokenType: 'Bearer', expiresAt: 10, refreshToken: 'r' };
  expect(unpackTokens(legacy)).toEqual(legacy);
  expect(unpackTokens({ accessToken: 'a' })).toBeUndefined();
  expect(publicTokens(unpackTokens(legacy)!)).toEqual({ accessToken: 'a', tokenType: 'Bearer', expiresAt: 10, scope: undefined });
});

test('a token response is stored with its type spelled as the RFCs do, and whole-second times from the given now', () => {
  // oauth4webapi hands over token_type as the server wrote it, or lowercased: req.auth.tokens says Bearer or DPoP.
  for (const [given, stored] of [['bearer', 'Bearer'], ['BEARER', 'Bearer'], ['dpop', 'DPoP'], ['DPOP', 'DPoP'], ['N_A', 'N_A']]) {
    expect(toStoredTokens({ access_token: 'a', token_type: given } as never).tokenType).toBe(stored);
  }
  expect(toStoredTokens({ access_token: 'a', token_type: 'bearer', expires_in: 59.9 } as never, undefined, 1000)).toEqual({
    accessToken: 'a',
    tokenType: 'Bearer',
    expiresAt: 1059,
    lifetime: 59,
  });
  // An access token valid for 0 seconds has a known expiry, now: it is due at once, not "never expires".
  expect(toStoredTokens({ access_token: 'a', token_type: 'bearer', expires_in: 0 } as never, undefined, 1000)).toMatchObject({ expiresAt: 1000, lifetime: 0 });
  expect(toStoredTokens({ access_token: 'a', token_type: 'bearer', expires_in: -5 } as never, undefined, 1000)).toEqual({ accessToken: 'a', tokenType: 'Bearer' });
});

test('a refresh response keeps what it left out from the previous set, and what it sent replaces it', () => {
  const previous: StoredTokens = { accessToken: 'old-at', tokenType: 'Bearer', scope: 'openid email', idToken: 'old-id', refreshToken: 'old-rt' };
  expect(toStoredTokens({ access_token: 'new-at', token_type: 'bearer' } as never, previous, 1000)).toEqual({
    accessToken: 'new-at',
    tokenType: 'Bearer',
    scope: 'openid email',
    idToken: 'old-id',
    refreshToken: 'old-rt',
  });
  const rotated = { access_token: 'new-at', token_type: 'bearer', scope: 'openid', id_token: 'new-id', refresh_token: 'new-rt' };
  expect(toStoredTokens(rotated as never, previous, 1000)).toMatchObject({ scope: 'openid', idToken: 'new-id', refreshToken: 'new-rt' });
});

test("req.auth.tokens is a frozen view with the set's scope and no refresh or ID token", () => {
  const view = publicTokens(full);
  expect(view).toEqual({ accessToken: full.accessToken, tokenType: 'Bearer', expiresAt: full.expiresAt, scope: full.scope });
  expect(Object.isFrozen(view)).toBe(true);
});

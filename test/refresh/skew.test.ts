import { expect, test } from '@jest/globals';
import { resolveOptions } from '../../lib/options.js';
import { effectiveSkew, leaseMs, needsRefresh } from '../../lib/refresh.js';

const base = { issuer: 'https://idp.example.com', clientId: 'app', redirectUri: 'https://app.example.com/callback' };

test('refreshSkew defaults to 60 s and refuses anything but a non-negative number', () => {
  expect(resolveOptions(base).refreshSkew).toBe(60);
  expect(resolveOptions({ ...base, refreshSkew: 0 }).refreshSkew).toBe(0);
  for (const bad of [-1, Number.NaN, Infinity, '30', null]) {
    expect(() => resolveOptions({ ...base, refreshSkew: bad })).toThrow(/refreshSkew/);
  }
});

test('the skew is never more than half the issued lifetime', () => {
  expect(effectiveSkew({ accessToken: 'a', tokenType: 'Bearer', expiresAt: 1000, lifetime: 3600 }, 60)).toBe(60);
  expect(effectiveSkew({ accessToken: 'a', tokenType: 'Bearer', expiresAt: 1000, lifetime: 60 }, 60)).toBe(30);
  expect(effectiveSkew({ accessToken: 'a', tokenType: 'Bearer' }, 60)).toBe(60);
  // A 60 s token is fresh for its first 30 s, not refreshed on every call.
  const tokens = { accessToken: 'a', tokenType: 'Bearer', expiresAt: 1060, lifetime: 60 };
  expect(needsRefresh(tokens, 60, 1029)).toBe(false);
  expect(needsRefresh(tokens, 60, 1030)).toBe(true);
  // Unknown expiry is never due: only refresh() renews such a token.
  expect(needsRefresh({ accessToken: 'a', tokenType: 'Bearer' }, 60, 10 ** 12)).toBe(false);
});

test('the lock lease outlasts two token requests and a key-set fetch at the configured timeout', () => {
  expect(leaseMs(resolveOptions(base))).toBe(16_000);
  expect(leaseMs(resolveOptions({ ...base, httpTimeout: 1000 }))).toBe(4000);
  expect(leaseMs(resolveOptions({ ...base, httpTimeout: 1500 }))).toBeGreaterThan(2 * 2000);
});

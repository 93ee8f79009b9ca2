import { describe, expect, test } from '@jest/globals';
import { sanitizeReturnTo } from '../../lib/return-to.js';

describe('sanitizeReturnTo', () => {
  test.each(['/', '/me', '/a/b?c=d&e=f#g', '/%E2%9C%93', '/path;x=1', '/a//b', '/search?q=a%2Fb', '/files/a%20b', '/a%2Fb', '/files/a%5Cb', '/%2e/x'])(
    'keeps the same-origin path %s',
    (value) => {
      expect(sanitizeReturnTo(value)).toBe(new URL(value, 'http://x.invalid').href.slice('http://x.invalid'.length));
    },
  );

  test.each([
    '//evil.example',
    '///evil.example',
    '/\\evil.example',
    '\\\\evil.example',
    'https://evil.example',
    'http:evil.example',
    'javascript:alert(1)',
    'JaVaScRiPt:alert(1)',
    'data:text/html,x',
    '/%2F%2Fevil.example',
    '/%2f%5cevil.example',
    '/%5C%5Cevil.example',
    '/\t/evil.example',
    '/\n/evil.example',
    '/\r\n/evil.example',
    '/ /evil.example',
    '/%09/evil.example',
    // One decoding away from a path that normalises to `//evil.example` (a dot segment before an encoded slash).
    '/.%2F/evil.example',
    '/.%2F%2Fevil.example',
    '/%2e%2F/evil.example',
    '/x/..%2F%2Fevil.example',
    '/.%5C/evil.example',
    '/.%09%2F/evil.example',
    // The same, two decodings away.
    '/.%252F/evil.example',
    '/x/..%252F%252Fevil.example',
    // Still changing after the three decodings the check follows (`//evil.example` encoded five times over).
    '/%252525252F%252525252Fevil.example',
    // Not decodable at all: nothing can tell where a decoder downstream would lead it.
    '/%E0%A4%A',
    '/%zz',
    '/\u0000',
    'evil.example',
    '',
    `/${'a'.repeat(3000)}`,
  ])('turns %j into /', (value) => {
    expect(sanitizeReturnTo(value)).toBe('/');
  });

  test.each([undefined, null, 42, ['/a'], { a: 1 }])('turns the non-string %p into /', (value) => {
    expect(sanitizeReturnTo(value)).toBe('/');
  });
});

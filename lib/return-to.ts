/** Where a login lands when `returnTo` is missing or unsafe. */
export const DEFAULT_RETURN_TO = '/';

/** A longer `returnTo` is not kept (the login lands on {@link DEFAULT_RETURN_TO}). */
export const MAX_RETURN_TO_LENGTH = 2048;
const PROBE_ORIGIN = 'http://return-to.invalid';

/** A path that starts like a protocol-relative URL to a browser, which strips tabs and newlines and reads `\` as `/`. */
const PROTOCOL_RELATIVE = /^[/\\][\s\u0000-\u001F\u007F]*[/\\]/;

/**
 * Keeps `returnTo` only when it is a same-origin path (RFC 9700 §4.11): `/x?y#z` passes; `//host`, `/\host`,
 * `https:…`, `javascript:…`, encoded or control-character variants all become `/`.
 */
export function sanitizeReturnTo(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_RETURN_TO_LENGTH) return DEFAULT_RETURN_TO;
  if (/[\u0000-\u001F\u007F\\]/.test(value)) return DEFAULT_RETURN_TO;
  const url = sameOriginUrl(value);
  // The normalised path is what the browser gets; anything downstream that percent-decodes it must not be led off the
  // origin either (`/%2F%2Fhost`, `/%5Chost`, `/.%2F/host`, `/x/..%2F%2Fhost`, and the same double-encoded).
  if (url === undefined || !staysSameOriginWhenDecoded(url.pathname)) return DEFAULT_RETURN_TO;
  return `${url.pathname}${url.search}${url.hash}`;
}

/**
 * The URL a path leads to, when it stays on the origin: it starts with `/` but not like a protocol-relative URL, and
 * its normalised path does not either (`/.//host` normalises to `//host`).
 */
function sameOriginUrl(path: string): URL | undefined {
  if (!path.startsWith('/') || PROTOCOL_RELATIVE.test(path)) return undefined;
  let url: URL;
  try {
    url = new URL(path, PROBE_ORIGIN);
  } catch {
    return undefined;
  }
  return url.origin === PROBE_ORIGIN && !PROTOCOL_RELATIVE.test(url.pathname) ? url : undefined;
}

/**
 * True when the path, decoded up to three times, passes the whole same-origin check after every round (not just a test
 * of its first characters: a dot segment before an encoded slash only turns protocol-relative once normalised).
 * Undecodable, or still changing after three rounds: false.
 */
function staysSameOriginWhenDecoded(pathname: string): boolean {
  let current = pathname;
  for (let round = 0; round < 4; round++) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(current);
    } catch {
      return false;
    }
    if (decoded === current) return true;
    if (sameOriginUrl(decoded) === undefined) return false;
    current = decoded;
  }
  return false;
}

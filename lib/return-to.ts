/** Where a login lands when `returnTo` is missing or unsafe. */
export const DEFAULT_RETURN_TO = '/';

/** A longer `returnTo` is not kept (the login lands on {@link DEFAULT_RETURN_TO}). */
export const MAX_RETURN_TO_LENGTH = 2048;
const PROBE_ORIGIN = 'http://return-to.invalid';

/**
 * Keeps `returnTo` only when it is a same-origin path (RFC 9700 §4.11): `/x?y#z` passes; `//host`, `/\host`,
 * `https:…`, `javascript:…`, encoded or control-character variants all become `/`.
 */
export function sanitizeReturnTo(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_RETURN_TO_LENGTH) return DEFAULT_RETURN_TO;
  // Browsers strip tabs and newlines and treat `\` as `/`, so `/\t/evil` and `/\evil` are protocol-relative to them.
  if (!value.startsWith('/') || value.startsWith('//') || value.startsWith('/\\')) return DEFAULT_RETURN_TO;
  if (/[\u0000-\u001F\u007F\\]/.test(value)) return DEFAULT_RETURN_TO;
  let url: URL;
  try {
    url = new URL(value, PROBE_ORIGIN);
  } catch {
    return DEFAULT_RETURN_TO;
  }
  if (url.origin !== PROBE_ORIGIN) return DEFAULT_RETURN_TO;
  const path = `${url.pathname}${url.search}${url.hash}`;
  // A normalised path that starts with `//` (from `/.//host`) is protocol-relative; so is one that turns into `//`,
  // `/\` or `/<tab>/` once anything downstream percent-decodes it (`/%2F%2Fhost`, `/%5Chost`, `/%09/host`, and the
  // same double-encoded).
  return turnsProtocolRelative(url.pathname) ? DEFAULT_RETURN_TO : path;
}

/** True when the path, as is or decoded up to three times, starts like a protocol-relative URL; undecodable too. */
function turnsProtocolRelative(pathname: string): boolean {
  let current = pathname;
  for (let round = 0; round < 4; round++) {
    if (/^[/\\][\s\u0000-\u001F\u007F]*[/\\]/.test(current)) return true;
    let decoded: string;
    try {
      decoded = decodeURIComponent(current);
    } catch {
      return true;
    }
    if (decoded === current) return false;
    current = decoded;
  }
  return true;
}

import type { Request } from 'express';
import { AuthError, AuthErrorCode } from './errors.js';

/** Longer queries than this are refused before anything parses them further. */
export const MAX_QUERY_LENGTH = 4096;

function invalid(message: string): AuthError {
  return new AuthError(AuthErrorCode.INVALID_REQUEST, 400, message);
}

/** The raw query string of a request, without `?`. */
export function rawQuery(req: Request): string {
  const url = req.originalUrl ?? req.url;
  const index = url.indexOf('?');
  return index === -1 ? '' : url.slice(index + 1);
}

/**
 * Parses the query strictly: bounded length, valid percent-encoding, and each of `names` at most once. Express's
 * own parser turns repeats into arrays and lets bad escapes through; protocol parameters must be unambiguous.
 */
export function strictQuery(req: Request, names: readonly string[]): URLSearchParams {
  const raw = rawQuery(req);
  if (raw.length > MAX_QUERY_LENGTH) throw invalid(`The query string is longer than ${MAX_QUERY_LENGTH} characters.`);
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) throw invalid('The query string has an invalid percent-encoding.');
  const params = new URLSearchParams(raw);
  for (const name of names) {
    if (params.getAll(name).length > 1) throw invalid(`The parameter "${name}" must not be repeated.`);
  }
  try {
    // URLSearchParams decodes lone surrogates and invalid UTF-8 to U+FFFD without failing; refuse them instead.
    decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    throw invalid('The query string is not valid UTF-8.');
  }
  return params;
}

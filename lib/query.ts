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
 * Parses the query strictly: bounded length, valid percent-encoding, each of `names` at most once and never in
 * array/object form (`name[]=`, `name[k]=`). Express's own parser turns repeats into arrays and lets bad escapes
 * through; protocol parameters must be unambiguous.
 */
export function strictQuery(req: Request, names: readonly string[]): URLSearchParams {
  const raw = rawQuery(req);
  if (raw.length > MAX_QUERY_LENGTH) throw invalid(`The query string is longer than ${MAX_QUERY_LENGTH} characters.`);
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) throw invalid('The query string has an invalid percent-encoding.');
  const params = new URLSearchParams(raw);
  for (const name of names) {
    if (params.getAll(name).length > 1) throw invalid(`The parameter "${name}" must not be repeated.`);
  }
  for (const key of params.keys()) {
    // `state[]=x` or `state[a]=x` is how arrays and objects are written for qs-style parsers (Express's `extended`);
    // a protocol parameter in that shape is an attempt to confuse some parser, never a mistake worth guessing about.
    const bracket = key.indexOf('[');
    const base = bracket > 0 ? key.slice(0, bracket) : undefined;
    if (base !== undefined && names.includes(base)) throw invalid(`The parameter "${base}" must be a single string value.`);
  }
  try {
    // URLSearchParams decodes lone surrogates and invalid UTF-8 to U+FFFD without failing; refuse them instead.
    decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    throw invalid('The query string is not valid UTF-8.');
  }
  return params;
}

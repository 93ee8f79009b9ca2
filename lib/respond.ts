import type { Request, Response } from 'express';
import { AuthError } from './errors.js';

/** A browser navigation, as opposed to an API client: it prefers HTML over JSON. */
export function prefersHtml(req: Request): boolean {
  return req.accepts(['json', 'html']) === 'html';
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for HTML. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

/** Headers on every response that touches login state: nothing cached, no URL leaked in a Referer. */
export function setNoStore(res: Response): void {
  res.set('Cache-Control', 'no-store');
  res.set('Pragma', 'no-cache');
  res.set('Referrer-Policy', 'no-referrer');
}

/** Answers with an {@link AuthError}: JSON for API clients, a small page for browsers. Never a stack trace. */
export function sendError(req: Request, res: Response, err: AuthError): void {
  setNoStore(res);
  res.status(err.status);
  if (prefersHtml(req)) {
    const upstream = err.error ? `<p>The authorization server said: <code>${escapeHtml(err.error)}</code>${err.errorDescription ? ` — ${escapeHtml(err.errorDescription)}` : ''}</p>` : '';
    res
      .type('html')
      .send(
        `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign-in problem</title></head><body><h1>Sign-in problem</h1><p>${escapeHtml(err.message)}</p>${upstream}<p><small>Error code: <code>${escapeHtml(err.code)}</code></small></p><p><a href="/">Back to the start page</a></p></body></html>`,
      );
    return;
  }
  res.json(err.toJSON());
}

/** Hands an error the library is about to answer to the app's `onError`; whatever the hook does, the answer goes out. */
export function reportError(onError: (err: AuthError, req: Request) => void, err: AuthError, req: Request): void {
  try {
    const result: unknown = onError(err, req);
    // An async hook (a remote logger that is down) must not become an unhandled rejection, which ends the process.
    if (isThenable(result)) result.then(undefined, () => undefined);
  } catch {
    // A logging hook must not turn a clean error answer into a crash.
  }
}

/** Any promise-like value (a native promise, or another library's thenable), as a hook or a check may return. */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/*
 * The library's own calls to the authorization server (discovery, the key set, token, revocation, PAR) go over
 * `node:http`/`node:https`, not Node's `fetch`.
 *
 * Why: reading any body through Node's fetch (undici's web streams, even `new Response(text).json()`) detaches an
 * ArrayBuffer, and on V8 the first detach in a process invalidates the `ArrayBufferDetaching` protector for good. From
 * then on every typed-array and Buffer operation of every request pays a check it skipped before (socket reads, HTTP
 * parsing, connect-redis's replies, express-session's hashing). One detach cost a bare express-session app 1–3 % of
 * its throughput (bench/FIXES.md §9); through openid-client and jose every process would pay it from its first login.
 *
 * The answer is read whole here and handed over as a {@link BufferedResponse}: a real `Response` (status, headers,
 * `instanceof`) whose body methods read the buffered bytes instead of a stream. Redirects are never followed (every
 * caller asks for `redirect: 'manual'`), and failures look like fetch's: `TypeError('fetch failed')` with the cause
 * when the server cannot be reached, `TypeError('terminated')` when the answer is cut off (by the server, or here when
 * it exceeds {@link MAX_ANSWER_BYTES}), the signal's reason when it aborts. `req.auth.fetch()` and `fetchUser`'s `fetch`
 * stay Node's fetch: their answers are the app's, streamed.
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { promisify } from 'node:util';
import { brotliDecompress, unzip } from 'node:zlib';

/** The request of {@link serverFetch}: the part of fetch's `RequestInit` that openid-client and jose send. */
export interface ServerRequest {
  method?: string;
  headers?: Record<string, string> | Headers;
  body?: ArrayBuffer | Uint8Array | string | URLSearchParams | ReadableStream | null;
  redirect?: string;
  signal?: AbortSignal | null;
}

/**
 * The most the library reads of one answer, before and after decoding. Discovery documents, key sets and token answers
 * are kilobytes; an answer without end (a misconfigured URL, a broken or hostile server, a small gzip that inflates to
 * gigabytes) must not fill the process's memory before anything could refuse it.
 */
export const MAX_ANSWER_BYTES = 1024 * 1024;

/**
 * How many kept-alive connections that turn out closed one request may try before it fails: each try drops a dead
 * connection from the agent's pool, and a request that met this many has met a server that resets more than idle ones.
 */
const MAX_STALE_CONNECTIONS = 4;

const decoder = new TextDecoder();
const inflate = promisify(unzip);
const unbrotli = promisify(brotliDecompress);

/** A `Response` over bytes already read: reading it never touches a web stream. */
export class BufferedResponse extends Response {
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array, init: ResponseInit) {
    super(null, init);
    this.#bytes = bytes;
  }

  override async arrayBuffer(): Promise<ArrayBuffer> {
    // A copy of its own: a small Buffer may be a view into Node's shared pool.
    return new Uint8Array(this.#bytes).buffer;
  }

  override async blob(): Promise<Blob> {
    return new Blob([new Uint8Array(this.#bytes)], { type: this.headers.get('content-type') ?? '' });
  }

  override async text(): Promise<string> {
    // fetch's text(): UTF-8, a byte-order mark dropped, invalid sequences replaced.
    return decoder.decode(this.#bytes);
  }

  override async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  override clone(): BufferedResponse {
    return new BufferedResponse(this.#bytes, { status: this.status, statusText: this.statusText, headers: this.headers });
  }
}

function requestBody(body: ServerRequest['body'], headers: Record<string, string>): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  const typed = (value: string, type: string) => {
    headers['content-type'] ??= type;
    return Buffer.from(value, 'utf8');
  };
  if (typeof body === 'string') return typed(body, 'text/plain;charset=UTF-8');
  if (body instanceof URLSearchParams) return typed(body.toString(), 'application/x-www-form-urlencoded;charset=UTF-8');
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  // oauth4webapi and jose never send a stream; a body this cannot send must not go out empty.
  throw new TypeError('The server request has a body of a kind it cannot send (a stream).');
}

/** Why an answer was cut off here: it exceeded {@link MAX_ANSWER_BYTES} (the cause of a `TypeError('terminated')`). */
export class AnswerTooLarge extends RangeError {
  constructor() {
    super(`The authorization server's answer is larger than ${MAX_ANSWER_BYTES} bytes; it was not read further.`);
  }
}

/** The answer's content codings undone, as fetch does; a coding it does not know leaves the bytes as they came. */
async function decoded(bytes: Buffer, contentEncoding: string | undefined): Promise<Buffer> {
  const codings = (contentEncoding ?? '').split(',').map((coding) => coding.trim().toLowerCase()).filter((coding) => coding !== '' && coding !== 'identity');
  let out = bytes;
  // zlib stops at the limit by itself (ERR_BUFFER_TOO_LARGE) instead of inflating a bomb whole.
  const limit = { maxOutputLength: MAX_ANSWER_BYTES };
  try {
    for (const coding of codings.reverse()) {
      if (coding === 'gzip' || coding === 'x-gzip' || coding === 'deflate') out = await inflate(out, limit);
      else if (coding === 'br') out = await unbrotli(out, limit);
      else return bytes;
    }
  } catch (err) {
    throw (err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE' ? new AnswerTooLarge() : err;
  }
  return out;
}

function responseOf(res: IncomingMessage, bytes: Uint8Array): BufferedResponse {
  const headers = new Headers();
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
  const status = res.statusCode ?? 0;
  try {
    return new BufferedResponse(bytes, { status, statusText: res.statusMessage ?? '', headers });
  } catch {
    // A reason phrase fetch would not carry; the status is what counts.
    return new BufferedResponse(bytes, { status, headers });
  }
}

/**
 * Sends one request to the authorization server and resolves with its whole answer (see the module's comment above).
 * Fits openid-client's and jose's `customFetch`.
 */
export function serverFetch(url: string, options: ServerRequest = {}): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    const signal = options.signal ?? undefined;
    if (signal?.aborted === true) return reject(signal.reason);
    let target: URL;
    let headers: Record<string, string>;
    let body: Buffer | undefined;
    try {
      target = new URL(url);
      if (target.protocol !== 'https:' && target.protocol !== 'http:') throw new TypeError(`${target.protocol} is not http: or https:`);
      headers = Object.fromEntries(new Headers(options.headers ?? {}));
      body = requestBody(options.body, headers);
    } catch (err) {
      return reject(new TypeError('fetch failed', { cause: err }));
    }
    if (body !== undefined) headers['content-length'] = String(body.byteLength);

    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      outcome();
    };
    const fail = (err: unknown) => settle(() => reject(err));
    const onAbort = () => {
      fail(signal!.reason);
      request.destroy();
    };

    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    let request: ClientRequest;
    const attempt = (reusedBefore: number) => {
      let answered = false;
      const current = send(target, { method: options.method ?? 'GET', headers }, (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        let received = 0;
        const refuse = () => {
          fail(new TypeError('terminated', { cause: new AnswerTooLarge() }));
          current.destroy();
        };
        if (Number(res.headers['content-length']) > MAX_ANSWER_BYTES) return refuse();
        res.on('data', (chunk: Buffer) => {
          received += chunk.byteLength;
          if (received > MAX_ANSWER_BYTES) return refuse();
          chunks.push(chunk);
        });
        res.on('error', (err) => fail(new TypeError('terminated', { cause: err })));
        res.on('close', () => {
          if (!res.complete) fail(new TypeError('terminated', { cause: new Error('The connection closed before the answer was complete.') }));
        });
        res.on('end', () => {
          decoded(Buffer.concat(chunks), res.headers['content-encoding']).then(
            (bytes) => settle(() => {
              try {
                resolve(responseOf(res, bytes));
              } catch (err) {
                // A status fetch refuses (outside 200–599).
                reject(new TypeError('fetch failed', { cause: err }));
              }
            }),
            (err: unknown) => fail(new TypeError('terminated', { cause: err })),
          );
        });
      });
      request = current;
      current.on('error', (err) => {
        // A kept-alive connection that the server closed while it sat idle, just as this request went out on it (the
        // agent and the server each time idle connections out; the server's close can cross the request). Sent again,
        // as Node's documentation of `request.reusedSocket` shows: the server closed for being idle and never read the
        // request; in the rare case that it read it and failed, a second try ends no worse than the lost answer (a spent
        // code or refresh token is refused). Each failed connection leaves the agent's pool; a fresh one that fails is
        // the server's answer.
        const code = (err as { code?: unknown }).code;
        if (!answered && !settled && current.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE') && reusedBefore < MAX_STALE_CONNECTIONS) {
          attempt(reusedBefore + 1);
          return;
        }
        // Node reports a connection lost mid-answer here first: the answer was cut off, as fetch says it.
        fail(new TypeError(answered ? 'terminated' : 'fetch failed', { cause: err }));
      });
      current.end(body);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    attempt(0);
  });
}

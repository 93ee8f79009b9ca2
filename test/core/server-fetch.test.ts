/**
 * The library's own calls to the authorization server go over node:http(s), not Node's fetch (lib/transport.ts): fetch
 * detaches an ArrayBuffer when it reads a body, which turns a V8 fast path off for the whole process. These tests hold
 * the transport to what fetch did for openid-client, oauth4webapi and jose, and show, in a process of its own on plain
 * node, that a login, a refresh and a logout leave that fast path on.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MAX_ANSWER_BYTES, serverFetch } from '../../lib/transport.js';
import { isNetworkError, isTimeout } from '../../lib/upstream.js';
import { listen, startStack, type Listener, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { nextLine } from '../helpers/child-process.js';
import { getJson, readLogin, refreshingProvider, REFRESH_SKEW, waitUntilDue } from '../refresh/support.js';

describe('serverFetch', () => {
  let server: Listener;
  let handler: (req: IncomingMessage, res: ServerResponse, body: string) => void;

  beforeAll(async () => {
    server = await listen();
    server.handle((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => handler(req, res, Buffer.concat(chunks).toString('utf8')));
    });
  });
  afterAll(() => server.close());

  test('answers a real Response whose body methods read the whole answer, as often as they are called on clones', async () => {
    handler = (_req, res) => {
      res.writeHead(201, 'Made', [['content-type', 'application/json'], ['www-authenticate', 'DPoP error="use_dpop_nonce"'], ['www-authenticate', 'Bearer realm="x"']]);
      res.end('\uFEFF{"a":"é"}');
    };
    const response = await serverFetch(`${server.url}/x`, { redirect: 'manual' });
    expect(response).toBeInstanceOf(Response);
    expect(Object.prototype.toString.call(response)).toBe('[object Response]');
    expect([response.status, response.statusText, response.ok]).toEqual([201, 'Made', true]);
    expect(response.headers.get('www-authenticate')).toBe('DPoP error="use_dpop_nonce", Bearer realm="x"');
    const copy = response.clone();
    // fetch's text(): UTF-8 with the byte-order mark dropped.
    expect(await response.json()).toEqual({ a: 'é' });
    expect(await copy.text()).toBe('{"a":"é"}');
    const bytes = new Uint8Array(await copy.arrayBuffer());
    expect(bytes.byteLength).toBe(Buffer.byteLength('\uFEFF{"a":"é"}'));
    expect((await copy.blob()).type).toBe('application/json');
  });

  test('sends the method, headers and body; a form gets its content type and every body its length', async () => {
    const seen: Array<{ method?: string; type?: string; length?: string; custom?: string; body: string }> = [];
    handler = (req, res, body) => {
      seen.push({ method: req.method, type: req.headers['content-type'], length: req.headers['content-length'], custom: req.headers['x-custom'] as string, body });
      res.end();
    };
    await serverFetch(server.url, { method: 'POST', headers: { 'x-custom': 'yes' }, body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'a b' }) });
    await serverFetch(server.url, { method: 'POST', headers: new Headers({ 'content-type': 'application/jwt' }), body: new TextEncoder().encode('é.x.y').subarray(2) });
    await serverFetch(server.url, { method: 'PUT', body: 'plain' });
    await serverFetch(server.url, { method: 'POST', body: new Uint8Array([104, 105]).buffer });
    expect(seen).toEqual([
      { method: 'POST', type: 'application/x-www-form-urlencoded;charset=UTF-8', length: '42', custom: 'yes', body: 'grant_type=refresh_token&refresh_token=a+b' },
      { method: 'POST', type: 'application/jwt', length: '4', body: '.x.y' },
      { method: 'PUT', type: 'text/plain;charset=UTF-8', length: '5', body: 'plain' },
      { method: 'POST', length: '2', body: 'hi' },
    ]);
    await expect(serverFetch(server.url, { method: 'POST', body: new ReadableStream() })).rejects.toThrow(expect.objectContaining({ name: 'TypeError', message: 'fetch failed' }));
  });

  test('undoes gzip, deflate and br as fetch does, several in the reverse of the order applied, and leaves a coding it does not know alone', async () => {
    const json = '{"keys":[]}';
    const bodies: Record<string, Buffer> = {
      gzip: gzipSync(json),
      deflate: deflateSync(json),
      br: brotliCompressSync(json),
      // Content-Encoding lists codings in the order they were applied: gzip first, then br.
      'gzip, br': brotliCompressSync(gzipSync(json)),
      unknown: Buffer.from(json),
    };
    handler = (req, res) => {
      const coding = decodeURIComponent(req.url!.slice(1));
      res.writeHead(200, { 'content-encoding': coding === 'unknown' ? 'zstd-ish' : coding });
      res.end(bodies[coding]);
    };
    for (const coding of Object.keys(bodies)) expect(await (await serverFetch(`${server.url}/${encodeURIComponent(coding)}`)).text()).toBe(json);
  });

  test('never follows a redirect: the 3xx is the answer', async () => {
    handler = (_req, res) => {
      res.writeHead(302, { location: '/elsewhere' });
      res.end();
    };
    const response = await serverFetch(server.url, { redirect: 'manual' });
    expect([response.status, response.headers.get('location')]).toEqual([302, '/elsewhere']);
  });

  test('fails like fetch: unreachable is "fetch failed", cut off is "terminated", both network errors to the library', async () => {
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await serverFetch(`http://127.0.0.1:${port}/`).catch((err: unknown) => err);
    expect(refused).toMatchObject({ name: 'TypeError', message: 'fetch failed', cause: { code: 'ECONNREFUSED' } });
    expect(isNetworkError(refused)).toBe(true);

    handler = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"access_token":');
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const cut = await serverFetch(server.url).catch((err: unknown) => err);
    expect(cut).toMatchObject({ name: 'TypeError', message: 'terminated' });
    expect(isNetworkError(cut)).toBe(true);

    await expect(serverFetch('ftp://127.0.0.1/')).rejects.toThrow(expect.objectContaining({ message: 'fetch failed' }));
  });

  test('a kept-alive connection that the server resets as the request goes out is tried again on a new connection; a new one that fails is not', async () => {
    // Requests served so far on each connection: a reset on one that served before is what a server's idle timeout
    // crossing the request looks like from here (the agent keeps connections alive).
    const served = new WeakMap<object, number>();
    const attempts: Array<{ method?: string; body: string; reused: boolean }> = [];
    let reset: 'none' | 'reused' | 'all' | 'mid-answer' = 'none';
    handler = (req, res, body) => {
      const before = served.get(req.socket) ?? 0;
      served.set(req.socket, before + 1);
      attempts.push({ method: req.method, body, reused: before > 0 });
      if (reset === 'mid-answer') {
        res.writeHead(200, { 'content-length': '100' });
        res.write('{"access_token":');
        setTimeout(() => req.socket.resetAndDestroy(), 20);
        return;
      }
      if (reset === 'all' || (reset === 'reused' && before > 0)) {
        req.socket.resetAndDestroy();
        return;
      }
      res.end('ok');
    };
    expect(await (await serverFetch(`${server.url}/warm`)).text()).toBe('ok');

    reset = 'reused';
    attempts.length = 0;
    const response = await serverFetch(`${server.url}/token`, { method: 'POST', body: new URLSearchParams({ code: 'c' }) });
    expect([response.status, await response.text()]).toEqual([200, 'ok']);
    // The same request twice: on the kept-alive connection (reset), then on a new one, answered.
    expect(attempts).toEqual([
      { method: 'POST', body: 'code=c', reused: true },
      { method: 'POST', body: 'code=c', reused: false },
    ]);

    reset = 'all';
    attempts.length = 0;
    const failed = await serverFetch(`${server.url}/token`, { method: 'POST', body: 'x' }).catch((err: unknown) => err);
    expect(failed).toMatchObject({ name: 'TypeError', message: 'fetch failed', cause: { code: 'ECONNRESET' } });
    // The kept-alive connection left by the answer above, then one new connection, whose reset is the answer.
    expect(attempts.map((a) => a.reused)).toEqual([true, false]);

    // A reset once the answer has begun: the server read the request and acted on it, so it is never sent again.
    reset = 'none';
    expect(await (await serverFetch(`${server.url}/warm`)).text()).toBe('ok');
    reset = 'mid-answer';
    attempts.length = 0;
    const cut = await serverFetch(`${server.url}/token`, { method: 'POST', body: 'x' }).catch((err: unknown) => err);
    expect(cut).toMatchObject({ name: 'TypeError', message: 'terminated', cause: { code: 'ECONNRESET' } });
    // Node reports the reset to the request before the answer's end: a second try would be on its way now, and reach
    // the server before a request sent after it.
    reset = 'none';
    expect(await (await serverFetch(`${server.url}/after`)).text()).toBe('ok');
    expect(attempts.map((a) => a.method)).toEqual(['POST', 'GET']);
  });

  test('verifies the server certificate over https: a self-signed one is refused before anything is sent', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'server-fetch-'));
    let received = 0;
    const tls = createHttpsServer((_req, res) => {
      received++;
      res.end('{}');
    });
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      tls.setSecureContext({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) });
      await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
      const url = `https://127.0.0.1:${(tls.address() as AddressInfo).port}/`;
      const refused = await serverFetch(url, { method: 'POST', body: new URLSearchParams({ client_secret: 'x' }) }).catch((err: unknown) => err);
      expect(refused).toMatchObject({ name: 'TypeError', message: 'fetch failed', cause: { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' } });
      expect(received).toBe(0);
    } finally {
      tls.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('reads at most MAX_ANSWER_BYTES of an answer, before and after decoding: more is a cut-off answer, a network error', async () => {
    const limit = MAX_ANSWER_BYTES;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let declaredBodySent = false;
    handler = (req, res) => {
      if (req.url === '/declared') {
        // Announces too much, sends a little and waits: refused on the header, without waiting for the rest.
        res.writeHead(200, { 'content-length': String(limit + 1) });
        res.write('{"keys":[');
        declaredBodySent = true;
      } else if (req.url === '/endless') {
        res.writeHead(200, { 'content-type': 'application/json' });
        const pump = setInterval(() => (res.destroyed ? clearInterval(pump) : res.write(chunk)), 1);
      } else if (req.url === '/bomb') {
        res.writeHead(200, { 'content-encoding': 'gzip' });
        res.end(gzipSync(Buffer.alloc(limit + 1, 0x20)));
      } else if (req.url === '/bomb-br') {
        res.writeHead(200, { 'content-encoding': 'br' });
        res.end(brotliCompressSync(Buffer.alloc(limit + 1, 0x20)));
      } else if (req.url === '/fits-gzip') {
        res.writeHead(200, { 'content-encoding': 'gzip' });
        res.end(gzipSync(Buffer.alloc(limit, 0x61)));
      } else {
        res.end(Buffer.alloc(limit, 0x61));
      }
    };
    for (const path of ['/declared', '/endless', '/bomb', '/bomb-br']) {
      const refused = await serverFetch(`${server.url}${path}`, { signal: AbortSignal.timeout(5000) }).catch((err: unknown) => err);
      expect(refused).toMatchObject({ name: 'TypeError', message: 'terminated', cause: { name: 'RangeError', message: expect.stringContaining(`larger than ${limit} bytes`) } });
      expect(isNetworkError(refused)).toBe(true);
    }
    expect(declaredBodySent).toBe(true);
    // Up to the limit, whole.
    expect((await (await serverFetch(`${server.url}/fits`)).arrayBuffer()).byteLength).toBe(limit);
    expect((await (await serverFetch(`${server.url}/fits-gzip`)).text()).length).toBe(limit);
  });

  test('a status fetch cannot represent is a failed request, not a made-up answer', async () => {
    handler = (_req, res) => {
      res.writeHead(699);
      res.end();
    };
    await expect(serverFetch(server.url)).rejects.toThrow(expect.objectContaining({ name: 'TypeError', message: 'fetch failed' }));
  });

  test('the signal aborts before sending, while waiting for the headers and while the body comes, with its reason', async () => {
    await expect(serverFetch(server.url, { signal: AbortSignal.abort(new Error('gone')) })).rejects.toThrow('gone');

    handler = () => undefined; // never answers
    const waiting = await serverFetch(server.url, { signal: AbortSignal.timeout(100) }).catch((err: unknown) => err);
    expect(isTimeout(waiting)).toBe(true);

    handler = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"access_token":'); // and stalls
    };
    const stalled = await serverFetch(server.url, { signal: AbortSignal.timeout(100) }).catch((err: unknown) => err);
    expect(isTimeout(stalled)).toBe(true);
  });
});

describe('in a process on plain node', () => {
  const FIXTURE = fileURLToPath(new URL('./fixtures/plain-node-app.mjs', import.meta.url));
  const DIST = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
  let stack: Stack;
  let port: number;

  beforeAll(async () => {
    // The app process's port, known before the provider registers its callback.
    const probe = createNetServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    stack = await startStack({
      provider: { configuration: refreshingProvider },
      auth: { refreshSkew: REFRESH_SKEW },
      extraRedirectUris: [`http://127.0.0.1:${port}/callback`],
    });
  });
  afterAll(() => stack?.close());

  test('a login, a refresh and a logout never detach an ArrayBuffer (V8 keeps its ArrayBufferDetaching fast path)', async () => {
    expect(existsSync(DIST)).toBe(true); // `npm test` builds dist/ first (pretest)
    const { redis: _redis, ...auth } = stack.authOptions;
    const config = { redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', sessionPrefix: stack.sessionPrefix, port, auth: { ...auth, redirectUri: `http://127.0.0.1:${port}/callback` } };
    const child = spawn(process.execPath, ['--trace-protector-invalidation', FIXTURE], { env: { ...process.env, APP_CONFIG: JSON.stringify(config) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const ready = await nextLine(child, /READY (\S+)/, 20_000).catch((err: Error) => {
        throw new Error(`${err.message}: ${output}`);
      });
      const url = ready[1]!;
      const browser = new Browser();
      // Discovery, the key set (the ID token's signature) and the code exchange.
      expect((await browser.login(`${url}/login?returnTo=/me`)).status).toBe(200);
      const before = await readLogin(stack, browser);
      await waitUntilDue(before.tokens);
      const refreshed = await getJson(browser, `${url}/token`);
      expect(refreshed.status).toBe(200);
      expect(refreshed.body.accessToken).not.toBe(before.tokens.accessToken);
      // Revocation of both tokens.
      const logout = await browser.request(`${url}/logout`, { method: 'POST', headers: { origin: url, accept: 'application/json' } });
      expect(logout.status).toBeLessThan(400);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    expect(output).not.toMatch(/Invalidating protector cell ArrayBufferDetaching/);
  }, 60_000);
});

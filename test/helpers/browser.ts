/**
 * A minimal browser for protocol tests: per-host cookie jar (cookies are per host, not port, as in browsers),
 * manual redirects, and form submission on the provider's login and consent pages.
 */
interface StoredCookie {
  value: string;
  path: string;
  httpOnly: boolean;
  sameSite: string | undefined;
  secure: boolean;
}

export interface Step {
  url: string;
  status: number;
  location: string | undefined;
}

export interface BrowserResponse {
  url: string;
  status: number;
  headers: Headers;
  body: string;
  /** Every hop, first to last. */
  steps: Step[];
}

export class Browser {
  readonly jar = new Map<string, Map<string, StoredCookie>>();
  /** Raw Set-Cookie headers seen, per host, for assertions on cookie attributes. */
  readonly setCookies: Array<{ host: string; header: string }> = [];
  /** Extra headers on every request (e.g. Accept). */
  headers: Record<string, string> = { accept: 'text/html,application/xhtml+xml,*/*;q=0.8' };

  cookieHeader(url: URL): string {
    const cookies = this.jar.get(url.hostname);
    if (!cookies) return '';
    return [...cookies.entries()]
      .filter(([, c]) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`) || c.path === '/')
      .map(([name, c]) => `${name}=${c.value}`)
      .join('; ');
  }

  cookie(host: string, name: string): StoredCookie | undefined {
    return this.jar.get(host)?.get(name);
  }

  #store(url: URL, headers: Headers): void {
    for (const header of headers.getSetCookie()) {
      this.setCookies.push({ host: url.hostname, header });
      const [pair = '', ...attributes] = header.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      const attrs = new Map(
        attributes.map((a) => {
          const i = a.indexOf('=');
          return i === -1 ? [a.toLowerCase(), ''] : [a.slice(0, i).toLowerCase(), a.slice(i + 1)];
        }),
      );
      const jar = this.jar.get(url.hostname) ?? new Map<string, StoredCookie>();
      this.jar.set(url.hostname, jar);
      const expires = attrs.get('expires');
      const maxAge = attrs.get('max-age');
      if ((maxAge !== undefined && Number(maxAge) <= 0) || (expires !== undefined && Date.parse(expires) <= Date.now())) {
        jar.delete(name);
        continue;
      }
      jar.set(name, {
        value,
        path: attrs.get('path') ?? '/',
        httpOnly: attrs.has('httponly'),
        sameSite: attrs.get('samesite'),
        secure: attrs.has('secure'),
      });
    }
  }

  /** One request, no redirect following. */
  async request(input: string | URL, init: RequestInit & { headers?: Record<string, string> } = {}): Promise<BrowserResponse> {
    const url = new URL(input);
    const cookie = this.cookieHeader(url);
    const response = await fetch(url, {
      ...init,
      redirect: 'manual',
      headers: { ...this.headers, ...(cookie ? { cookie } : {}), ...init.headers },
    });
    this.#store(url, response.headers);
    const body = await response.text();
    const location = response.headers.get('location') ?? undefined;
    return {
      url: url.href,
      status: response.status,
      headers: response.headers,
      body,
      steps: [{ url: url.href, status: response.status, location: location && new URL(location, url).href }],
    };
  }

  /**
   * GETs `start` and follows redirects. Stops before requesting a URL for which `stopBefore` is true, returning the
   * last response (its `location` is that URL).
   */
  async follow(start: string | URL, options: { stopBefore?: (url: URL) => boolean; maxHops?: number } = {}): Promise<BrowserResponse> {
    let response = await this.request(start);
    const steps = [...response.steps];
    for (let hop = 0; hop < (options.maxHops ?? 20); hop++) {
      if (response.status < 300 || response.status >= 400) break;
      const next = steps.at(-1)?.location;
      if (next === undefined) break;
      if (options.stopBefore?.(new URL(next))) break;
      response = await this.request(next);
      steps.push(...response.steps);
    }
    return { ...response, steps };
  }

  /** Submits the provider's login and consent forms until it redirects away from the provider. */
  async #interact(page: BrowserResponse, login: string, stopBefore?: (url: URL) => boolean): Promise<BrowserResponse> {
    let current = page;
    const steps = [...page.steps];
    for (let round = 0; round < 4; round++) {
      if (current.status !== 200) break;
      const action = /<form[^>]*action="([^"]+)"/.exec(current.body)?.[1];
      const prompt = /name="prompt" value="(\w+)"/.exec(current.body)?.[1];
      if (!action || !prompt) break;
      const form = new URLSearchParams({ prompt });
      if (prompt === 'login') {
        form.set('login', login);
        form.set('password', 'any-password');
      }
      const posted = await this.request(new URL(action.replace(/&amp;/g, '&'), current.url), {
        method: 'POST',
        body: form.toString(),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      steps.push(...posted.steps);
      const next = posted.steps.at(-1)?.location;
      if (!next) return { ...posted, steps };
      current = await this.follow(next, stopBefore ? { stopBefore } : {});
      steps.push(...current.steps);
      if (current.status >= 300 && current.status < 400) break;
    }
    return { ...current, steps };
  }

  /**
   * Runs a whole login from `startUrl` (usually the app's login route) as user `login`: the provider's login and
   * consent pages are filled in. With `stopAtCallback`, returns before the callback is requested; the callback URL
   * is then `result.steps.at(-1).location`.
   */
  async login(startUrl: string | URL, options: { login?: string; stopAtCallback?: (url: URL) => boolean } = {}): Promise<BrowserResponse> {
    const stop = options.stopAtCallback;
    const first = await this.follow(startUrl, stop ? { stopBefore: stop } : {});
    if (first.status >= 300 && first.status < 400) return first;
    return this.#interact(first, options.login ?? 'alice', stop);
  }
}

/**
 * The example app in a real browser: Debian's Chromium, driven headless by playwright-core. The app runs as
 * `npm start` would run it (a child process on embedded defaults), with 3-second access tokens and the tests' Redis.
 * Screenshots of every step go to test-artifacts/e2e/.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT, generateKeyPair } from 'jose';
import { chromium, type Browser, type Page } from 'playwright-core';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts', 'e2e');
const CHROMIUM = '/usr/bin/chromium';
const TOKEN_TTL_SECONDS = 3;

interface Example {
  child: ChildProcess;
  appUrl: string;
  issuer: string;
  apiUrl: string;
  output: () => string;
}

let example: Example | undefined;
let browser: Browser | undefined;

/** Starts example-app/server.ts like `npm start` does and reads the URLs it prints. */
async function startExample(): Promise<Example> {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', DEV_ACCESS_TOKEN_TTL: String(TOKEN_TTL_SECONDS) };
  // Embedded defaults: nothing that would point the example at another provider.
  for (const name of ['ISSUER', 'CLIENT_ID', 'CLIENT_SECRET', 'REDIRECT_URI', 'SCOPE', 'API_AUDIENCE', 'SESSION_SECRET', 'HOST']) {
    delete env[name];
  }
  const child = spawn(process.execPath, ['--import', 'tsx', 'example-app/server.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const started = await new Promise<{ appUrl: string; issuer: string; apiUrl: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the example app did not print its URL within 30 s:\n${output}`)), 30_000);
    const onData = () => {
      const appUrl = /Open (http:\/\/\S+)/.exec(output)?.[1];
      const issuer = /Dev authorization server\s+(http:\/\/\S+)/.exec(output)?.[1];
      const apiUrl = /Protected API\s+(http:\/\/\S+)/.exec(output)?.[1];
      if (appUrl && issuer && apiUrl && /Sessions\s+/.test(output)) {
        clearTimeout(timer);
        resolve({ appUrl, issuer, apiUrl });
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the example app exited (${String(code)}) before it was ready:\n${output}`));
    });
  });
  return { child, ...started, output: () => output };
}

async function stopExample(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

async function launchChromium(): Promise<Browser> {
  try {
    return await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
      timeout: 30_000,
    });
  } catch (err) {
    throw new Error(
      `Chromium could not start from ${CHROMIUM}. Install Debian's package: apt-get install -y chromium ` +
        `(this test never downloads a browser). Cause: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}

beforeAll(async () => {
  rmSync(ARTIFACTS, { recursive: true, force: true });
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
  example = await startExample();
}, 90_000);

afterAll(async () => {
  await browser?.close();
  if (example) await stopExample(example.child);
});

function started(): { example: Example; browser: Browser } {
  if (!example || !browser) throw new Error('setup failed: see the error of beforeAll');
  return { example, browser };
}

/** Runs one step; on failure saves a screenshot named after it and says which step failed. */
async function step(page: Page, name: string, run: () => Promise<void>): Promise<void> {
  try {
    await run();
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  } catch (err) {
    await page.screenshot({ path: join(ARTIFACTS, `${name}-FAILED.png`), fullPage: true }).catch(() => {});
    const text = await page.locator('body').innerText().catch(() => '(no page text)');
    throw new Error(`step ${name} failed at ${page.url()}: ${err instanceof Error ? err.message : String(err)}\n--- page text ---\n${text}`, {
      cause: err,
    });
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('a person logs in, calls the API, outlives the access token, calls it again, and logs out', async () => {
  const { example, browser } = started();
  expect(example.output()).toMatch(/Sessions\s+Redis at /);
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const atProvider = (url: URL) => url.href.startsWith(`${example.issuer}/interaction/`);

  try {
    await step(page, '01-home', async () => {
      await page.goto(example.appUrl);
      await page.getByRole('link', { name: 'Log in' }).waitFor();
    });

    await step(page, '02-provider-login', async () => {
      await page.getByRole('link', { name: 'Log in' }).click();
      await page.waitForURL(atProvider);
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    });

    await step(page, '03-consent', async () => {
      await page.getByLabel('Username').fill('demo');
      await page.getByLabel('Password').fill('demo');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
      expect(atProvider(new URL(page.url()))).toBe(true);
    });

    await step(page, '04-profile', async () => {
      await page.getByRole('button', { name: 'Allow' }).click();
      await page.waitForURL(`${example.appUrl}/profile`);
      expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe('Dee Demo');
      expect(await page.getByTestId('claims').innerText()).toContain('demo@example.com');
      expect(Number(await page.getByTestId('expires-at').getAttribute('data-expires-at'))).toBeGreaterThan(0);
      // Tokens stay on the server: one opaque, httpOnly, SameSite=Lax session cookie, and no JWT in the page.
      const cookies = await context.cookies(example.appUrl);
      expect(cookies.map((c) => c.name)).toEqual(['example.sid']);
      expect(cookies[0]).toMatchObject({ httpOnly: true, sameSite: 'Lax' });
      expect(cookies[0]?.value).not.toMatch(/eyJ/);
      expect(await page.content()).not.toMatch(/eyJ[\w-]+\.[\w-]+\./);
    });

    let firstExpiry = 0;
    await step(page, '05-api', async () => {
      await page.getByRole('button', { name: 'Call the API' }).click();
      await page.waitForURL((url) => url.origin === example.appUrl && url.pathname === '/call-api');
      expect(await page.getByRole('heading', { level: 1 }).innerText()).toMatch(/^The API answered 200/);
      expect(await page.getByTestId('api-body').innerText()).toContain('Hello, demo!');
      firstExpiry = Number(await page.getByTestId('expires-at').getAttribute('data-expires-at'));
      expect(firstExpiry).toBeGreaterThan(0);
    });

    // Past the token's lifetime (and a second more, as the API checks `exp` with no leeway).
    await sleep(Math.max(0, (firstExpiry + 1) * 1000 - Date.now()));

    await step(page, '06-api-after-expiry', async () => {
      await page.getByRole('button', { name: 'Call the API again' }).click();
      // Either the API's answer or the app's error page; the heading says which.
      await page.locator('[data-testid="api-status"], [data-testid="error-code"]').first().waitFor();
      expect(await page.getByRole('heading', { level: 1 }).innerText()).toMatch(/^The API answered 200/);
      expect(await page.getByTestId('renewed').innerText()).toMatch(/^yes/);
      const renewedExpiry = Number(await page.getByTestId('expires-at').getAttribute('data-expires-at'));
      expect(renewedExpiry).toBeGreaterThan(firstExpiry);
      const answer = JSON.parse(await page.getByTestId('api-body').innerText()) as { token_expires_at: number };
      expect(answer.token_expires_at).toBeGreaterThan(firstExpiry);
    });

    await step(page, '07-logged-out', async () => {
      await page.locator('header').getByRole('button', { name: 'Log out' }).click();
      await page.waitForURL(`${example.appUrl}/`);
      await page.getByRole('link', { name: 'Log in' }).waitFor();
      // The destroyed session alone would pass step 08; a cookie left behind means logout cleared another name.
      expect((await context.cookies(example.appUrl)).map((c) => c.name)).not.toContain('example.sid');
    });

    await step(page, '08-profile-asks-to-log-in', async () => {
      await page.goto(`${example.appUrl}/profile`);
      await page.waitForURL(atProvider);
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    });
  } finally {
    await context.close();
  }
}, 120_000);

test('the protected API answers 401 without a valid access token', async () => {
  const { example } = started();
  const api = new URL(example.apiUrl);

  const missing = await fetch(api);
  expect(missing.status).toBe(401);
  expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer realm="example-api"/);
  expect(missing.headers.get('www-authenticate')).not.toMatch(/error=/);

  const garbage = await fetch(api, { headers: { authorization: 'Bearer not-a-jwt' } });
  expect(garbage.status).toBe(401);
  expect(garbage.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);

  // Right issuer, audience, type and scope, but signed with a key that is not the issuer's.
  const { privateKey } = await generateKeyPair('RS256');
  const forged = await new SignJWT({ scope: 'api:read', client_id: 'example-app' })
    .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: 'dev-key-1' })
    .setIssuer(example.issuer)
    .setAudience(api.origin)
    .setSubject('demo')
    .setIssuedAt()
    .setExpirationTime('1m')
    .sign(privateKey);
  const refused = await fetch(api, { headers: { authorization: `Bearer ${forged}` } });
  expect(refused.status).toBe(401);
  expect(await refused.json()).toMatchObject({ error: 'invalid_token' });
});

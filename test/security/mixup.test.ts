/**
 * Mix-up defence (RFC 9207 §2.4; RFC 9700 §4.4.2): the `iss` of the authorization response must equal the issuer,
 * and must be present when the server advertises `authorization_response_iss_parameter_supported`. Checked before the
 * code goes anywhere: a code meant for another server is never sent to this one's token endpoint, and vice versa.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';
import { Browser } from '../helpers/browser.js';
import { startRogueStack, type RogueStack } from '../helpers/rogue-provider.js';
import { expectRefusal, loginUntilCallback, withParams, observe, type Observed } from '../helpers/security.js';

let stack: Stack;
let observed: Observed;
let rogue: RogueStack;
let rogueObserved: Observed;

beforeAll(async () => {
  stack = await startStack();
  observed = observe(stack);
  rogue = await startRogueStack();
  // This server does not promise to send `iss`.
  delete rogue.rogue.metadata.authorization_response_iss_parameter_supported;
  rogueObserved = { redis: rogue.redis, sessionPrefix: rogue.sessionPrefix, traffic: rogue.traffic };
});
afterAll(async () => {
  await rogue.close();
  await stack.close();
});

test('the test server advertises authorization_response_iss_parameter_supported and sends iss', async () => {
  const metadata = (await (await fetch(`${stack.provider.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
  const pending = await loginUntilCallback(stack, new Browser());

  expect(metadata.authorization_response_iss_parameter_supported).toBe(true);
  expect(pending.callbackUrl.searchParams.get('iss')).toBe(stack.provider.issuer);
});

test("an authorization response carrying another issuer's iss is refused before the code is redeemed", async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const consumed = stack.provider.count('authorization_code.consumed');

  await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { iss: 'https://attacker.example' })), {
    status: 400,
    code: 'invalid_response',
    secrets: pending.secrets,
  });
  // The state was spent on the forged response: the genuine one cannot be used afterwards either.
  await expectRefusal(observed, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_state', secrets: pending.secrets });
  expect(stack.provider.count('authorization_code.consumed')).toBe(consumed);
});

test.each([
  ['a trailing slash', (issuer: string) => `${issuer}/`],
  ['an upper-case host', (issuer: string) => issuer.replace('localhost', 'LOCALHOST')],
  ['an explicit default path', (issuer: string) => `${issuer}/.`],
  ['surrounding whitespace', (issuer: string) => ` ${issuer}`],
])('iss is compared exactly: %s is refused', async (_name, variant) => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { iss: variant(stack.provider.issuer) })), {
    status: 400,
    code: 'invalid_response',
    secrets: pending.secrets,
  });
});

test('a missing iss is refused when the server advertises that it always sends one', async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);

  await expectRefusal(observed, () => browser.request(withParams(pending.callbackUrl, { iss: undefined })), {
    status: 400,
    code: 'invalid_response',
    secrets: pending.secrets,
  });
});

test("an error response with a forged iss is refused as a mix-up, not shown as the server's error", async () => {
  const browser = new Browser();
  const pending = await loginUntilCallback(stack, browser);
  const forged = withParams(pending.callbackUrl, { code: undefined, error: 'access_denied', iss: 'https://attacker.example' });

  await expectRefusal(observed, () => browser.request(forged), { status: 400, code: 'invalid_response', secrets: pending.secrets });
});

test('a server that does not advertise iss: a response without iss is accepted (RFC 9207 §2.4)', async () => {
  rogue.rogue.responseIss = null;
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(rogue, browser);
    expect(pending.callbackUrl.searchParams.has('iss')).toBe(false);
    expect((await browser.request(pending.callbackUrl)).status).toBe(302);
  } finally {
    rogue.rogue.responseIss = rogue.rogue.issuer;
  }
});

test('a server that does not advertise iss: a wrong iss is still refused, and no token request is made', async () => {
  rogue.rogue.responseIss = 'https://attacker.example';
  try {
    const browser = new Browser();
    const pending = await loginUntilCallback(rogue, browser);
    await expectRefusal(rogueObserved, () => browser.request(pending.callbackUrl), { status: 400, code: 'invalid_response', secrets: pending.secrets });
  } finally {
    rogue.rogue.responseIss = rogue.rogue.issuer;
  }
});

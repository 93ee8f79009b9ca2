import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { startStack, type Stack } from '../helpers/app.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => stack.close());

test('logs in', async () => {
  const result = await stack.browser.login(`${stack.appUrl}/login?returnTo=/me`);

  expect(result.status).toBe(200);
});

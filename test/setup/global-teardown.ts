export default async function globalTeardown(): Promise<void> {
  await globalThis.__PRIVATE_REDIS__?.stop();
}

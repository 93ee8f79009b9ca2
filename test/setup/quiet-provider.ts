// oidc-provider prints the same development notices for every provider a test starts ("Unsupported runtime",
// "devInteractions is enabled", default TTL notices…). They are expected here and bury real failures in the output.
const PROVIDER_NOTICE = /^oidc-provider (WARNING|NOTICE):/;

for (const level of ['warn', 'info'] as const) {
  const original = console[level].bind(console);
  console[level] = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && PROVIDER_NOTICE.test(args[0])) return;
    original(...args);
  };
}

export { auth } from './auth.js';
export { requireAuth } from './guards.js';
export type { AuthCheck } from './guards.js';
export { AuthError, AuthErrorCode } from './errors.js';
export type { AuthErrorOptions } from './errors.js';
export type { AuthOptions, ClientAuthMethod, ClientPrivateKey, ClientPrivateKeyOptions, FetchUser, LoginParams, RouteOptions, ServerEndpoints } from './options.js';
export type { ResourceFetch, ResourceRequestInit } from './resource.js';
export type { AuthContext, IdTokenClaims } from './context.js';
export type { TokenSet } from './tokens.js';

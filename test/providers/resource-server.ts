import type { Express, Request } from 'express';

/**
 * A resource server as an app would call one: `/api/user` accepts an access token only when the provider's
 * introspection endpoint says it is active, and answers who it belongs to; `/api/echo` tells how it was called.
 */
export function resourceRoutes(issuer: string, client: { id: string; secret: string }) {
  return (app: Express): void => {
    app.get('/api/user', async (req: Request, res) => {
      const [scheme, token] = (req.get('authorization') ?? '').split(' ');
      if (!token) {
        res.status(401).set('WWW-Authenticate', 'Bearer').end();
        return;
      }
      const response = await fetch(`${issuer}/token/introspection`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ token }).toString(),
      });
      const introspection = (await response.json()) as { active: boolean; sub?: string; scope?: string };
      if (!introspection.active) {
        res.status(401).set('WWW-Authenticate', 'Bearer error="invalid_token"').end();
        return;
      }
      res.json({ sub: introspection.sub, scope: introspection.scope, scheme });
    });
    app.get('/api/echo', (req, res) => {
      res.json({ scheme: (req.get('authorization') ?? '').split(' ')[0], dpop: req.get('dpop') !== undefined, method: req.method });
    });
  };
}

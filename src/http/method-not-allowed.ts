/**
 * 405 for a known route asked with a method it does not serve, with an `Allow` header (RFC 9110
 * 15.5.6), instead of the 404 hono gives. Call after every route is registered: each path gets a
 * catch-all answered only when no route of its own matched.
 */
import type { Context, Hono } from 'hono';

export function methodNotAllowed(app: Hono, respond: (c: Context, allow: string[]) => Response): void {
  const byPath = new Map<string, Set<string>>();
  // `use` middleware is registered as method ALL: not a route.
  for (const r of app.routes) {
    if (r.method === 'ALL') continue;
    let m = byPath.get(r.path);
    if (!m) byPath.set(r.path, (m = new Set()));
    m.add(r.method);
    // hono answers HEAD with the GET route.
    if (r.method === 'GET') m.add('HEAD');
  }
  for (const [path, methods] of byPath) {
    const allow = [...methods].sort();
    app.all(path, (c) => {
      const res = respond(c, allow);
      res.headers.set('allow', allow.join(', '));
      return res;
    });
  }
}

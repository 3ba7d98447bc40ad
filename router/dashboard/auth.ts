import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import { openAIError } from '../errors.js';

export const DASHBOARD_COOKIE = 'kv_router_dashboard';

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** What the cookie holds: derived from the key, so the key itself never sits in the browser. */
export function cookieToken(adminKey: string): string {
  return createHmac('sha256', adminKey).update('kv-router dashboard').digest('hex');
}

/**
 * With an admin key set, the dashboard needs it like the admin API: `Authorization: Bearer <key>`
 * (curl, `kv-router status --key`), or once `/dashboard?key=<key>`, which sets an HttpOnly cookie
 * (path /dashboard) and redirects to the page without the key in the address bar.
 */
export function dashboardAuth(adminKey: string | null) {
  const token = adminKey === null ? null : cookieToken(adminKey);
  return async (c: Context, next: Next) => {
    if (adminKey === null || token === null) return next();
    const h = c.req.header('authorization') ?? '';
    if (h.startsWith('Bearer ') && same(h.slice(7), adminKey)) return next();
    if (same(getCookie(c, DASHBOARD_COOKIE) ?? '', token)) return next();
    const q = c.req.query('key');
    if (q !== undefined && same(q, adminKey)) {
      setCookie(c, DASHBOARD_COOKIE, token, { path: '/dashboard', httpOnly: true, sameSite: 'Strict' });
      if (c.req.path === '/dashboard') return c.redirect('/dashboard', 303);
      return next();
    }
    return openAIError(
      401,
      'the dashboard needs the admin key: open /dashboard?key=<admin key> once (sets a cookie), or send "Authorization: Bearer <admin key>"',
      'authentication_error',
      'invalid_admin_key',
    );
  };
}

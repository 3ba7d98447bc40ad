/**
 * Request ids and the access log of the router and worker apps: every request gets an id (the
 * client's `x-request-id` when it is a sane token, else a fresh UUID), returned as `x-request-id`
 * (the router's OpenAI routes also send it on to the worker); one log line per request once its
 * response head is known, with the worker the router picked (its `x-kv-router-worker` header).
 */
import { randomUUID } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import type { Logger } from '../log/logger.js';

declare module 'hono' {
  interface ContextVariableMap {
    requestId: string;
  }
}

export const REQUEST_ID_HEADER = 'x-request-id';
const PROBE_PATHS = new Set(['/health', '/metrics', '/load']);
const SANE_ID = /^[\x21-\x7e]{1,128}$/;

/** The client's id when it is 1-128 printable ASCII characters without spaces; a new UUID otherwise. */
export function requestIdFrom(given: string | undefined): string {
  return given !== undefined && SANE_ID.test(given) ? given : randomUUID();
}

/** The id the request-id middleware gave this request (a fresh one if it did not run). */
export function requestIdOf(c: Context): string {
  return c.get('requestId') ?? requestIdFrom(c.req.header(REQUEST_ID_HEADER));
}

/**
 * Sets the request id, echoes it on the response, and (with a logger) writes the access line.
 * duration_ms is the time to the response head: a stream goes on after it.
 */
export function requestIdAndAccessLog(logger: Logger | null): MiddlewareHandler {
  return async (c, next) => {
    const t0 = performance.now();
    const id = requestIdFrom(c.req.header(REQUEST_ID_HEADER));
    c.set('requestId', id);
    await next();
    try {
      c.res.headers.set(REQUEST_ID_HEADER, id);
    } catch {
      // A response with immutable headers (one passed through from fetch()): copy its head.
      c.res = new Response(c.res.body, c.res);
      c.res.headers.set(REQUEST_ID_HEADER, id);
    }
    // Probes (every health interval, every scrape) go to debug: info keeps one line per real request.
    const level = c.req.method === 'GET' && PROBE_PATHS.has(c.req.path) ? 'debug' : 'info';
    if (!logger?.enabled(level)) return;
    logger[level](`${c.req.method} ${c.req.path} ${c.res.status}`, {
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      duration_ms: Math.round((performance.now() - t0) * 10) / 10,
      worker: c.res.headers.get('x-kv-router-worker') ?? undefined,
      request_id: id,
    });
  };
}

import type { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { openAIError } from '../errors.js';
import { dashboardAuth } from '../dashboard/auth.js';
import { DashboardHub } from '../dashboard/hub.js';
import type { DashboardSources } from '../dashboard/collect.js';
import { staticFile } from '../dashboard/static-files.js';
import type { Snapshot } from '../dashboard/snapshot.js';

export interface DashboardRoutesDeps extends DashboardSources {
  adminKey: string | null;
  /** Snapshot period of the live updates (default 1 s). */
  intervalMs?: number;
}

/** GET /dashboard (the page), /dashboard/static/* (its files, uPlot included), /dashboard/snapshot (JSON), /dashboard/events (SSE). */
export function dashboardRoutes(app: Hono, d: DashboardRoutesDeps): DashboardHub {
  const hub = new DashboardHub(d, d.intervalMs ?? 1000);
  const auth = dashboardAuth(d.adminKey);
  app.use('/dashboard', auth);
  app.use('/dashboard/*', auth);

  app.get('/dashboard', () => serve('index.html'));
  app.get('/dashboard/static/:file', (c) => serve(c.req.param('file')));
  app.get('/dashboard/snapshot', async (c) => c.json(await hub.current()));
  app.get('/dashboard/events', (c) =>
    streamSSE(c, async (stream) => {
      let wake: (() => void) | null = null;
      let next: Snapshot | null = null;
      let ended = false;
      const off = hub.subscribe((s) => {
        if (s === null) ended = true;
        else next = s;
        wake?.();
      });
      stream.onAbort(() => wake?.());
      try {
        if (!ended) next = await hub.take();
        while (!stream.aborted && !ended) {
          if (next) {
            const s: Snapshot = next;
            next = null;
            await stream.writeSSE({ event: 'snapshot', data: JSON.stringify(s) });
            continue;
          }
          await new Promise<void>((r) => (wake = r));
          wake = null;
        }
      } finally {
        off();
      }
    }),
  );
  return hub;
}

function serve(name: string): Response {
  const f = staticFile(name);
  if (!f) return openAIError(404, `no dashboard file "${name}"`, 'not_found_error');
  return new Response(new Uint8Array(f.body), {
    headers: {
      'content-type': f.type,
      'cache-control': 'no-cache',
      'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
      'x-content-type-options': 'nosniff',
    },
  });
}

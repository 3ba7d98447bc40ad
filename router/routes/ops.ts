import type { Hono } from 'hono';
import { openAIError } from '../errors.js';
import type { RouterMetrics } from '../metrics.js';
import type { Policy } from '../policies/policy.js';
import type { Registry } from '../registry.js';
import type { ClusterLink } from '../cluster/link.js';
import { mergeModelLists } from '../models.js';

export interface OpsRoutesDeps {
  registry: Registry;
  metrics: RouterMetrics;
  policy: Policy;
  cluster: ClusterLink | null;
  /** Per-worker timeout of the /v1/models fan-out. */
  modelsTimeoutMs: number;
}

/** GET /health, /metrics, /v1/models. */
export function opsRoutes(app: Hono, d: OpsRoutesDeps): void {
  app.get('/health', (c) => {
    const healthy = d.registry.healthyCount();
    const total = d.registry.list().length;
    return c.json({ status: healthy > 0 ? 'ok' : 'no_healthy_worker', workers: total, healthy_workers: healthy, policy: d.policy.name, cluster: d.cluster?.status() ?? null }, healthy > 0 ? 200 : 503);
  });

  app.get('/metrics', async (c) => {
    const text = await d.metrics.registry.metrics();
    return c.text(text, 200, { 'content-type': d.metrics.registry.contentType });
  });

  app.get('/v1/models', async () => {
    const healthy = d.registry.list().filter((w) => w.state === 'healthy');
    if (healthy.length === 0) return openAIError(503, 'no healthy worker', 'service_unavailable', 'no_healthy_worker');
    const lists = await Promise.all(
      healthy.map(async (w): Promise<unknown[]> => {
        try {
          const r = await fetch(`${w.url}/v1/models`, { signal: AbortSignal.timeout(d.modelsTimeoutMs) });
          if (!r.ok) return [];
          const j = (await r.json()) as { data?: unknown };
          return Array.isArray(j.data) ? j.data : [];
        } catch {
          return []; // skip that worker
        }
      }),
    );
    return new Response(JSON.stringify({ object: 'list', data: mergeModelLists(lists) }), { headers: { 'content-type': 'application/json' } });
  });
}

import { timingSafeEqual } from 'node:crypto';
import type { Context, Hono } from 'hono';
import { ConfigError, parseWorker } from '../config.js';
import { openAIError } from '../errors.js';
import type { LoadView } from '../load.js';
import type { Registry, WorkerEntry } from '../registry.js';
import type { ClusterLink } from '../cluster/link.js';
import { SharedLoad } from '../cluster/shared-load.js';
import { snakeKeys } from '../../src/http/snake-keys.js';

export interface AdminIndex {
  stats(source: string): unknown;
  dump(source: string): unknown;
}

export interface AdminRoutesDeps {
  registry: Registry;
  load: LoadView & { reportedOf(source: string): unknown };
  index: AdminIndex;
  adminKey: string | null;
  cluster?: ClusterLink | null;
  /** The worker's prediction accuracy (observe/accuracy.ts). */
  prediction?: (workerId: string) => unknown;
}

/** /workers: list, describe (with ?dump, the trees), add, remove; behind a bearer key when one is configured. */
export function adminRoutes(app: Hono, d: AdminRoutesDeps): void {
  const { registry, load, index, adminKey } = d;
  app.use('/workers', adminAuth);
  app.use('/workers/*', adminAuth);
  async function adminAuth(c: Context, next: () => Promise<void>) {
    if (adminKey === null) return next();
    const h = c.req.header('authorization') ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7) : '');
    const want = Buffer.from(adminKey);
    if (given.length !== want.length || !timingSafeEqual(given, want)) {
      return openAIError(401, 'admin routes need "Authorization: Bearer <admin key>"', 'authentication_error', 'invalid_admin_key');
    }
    return next();
  }

  app.get('/workers', (c) => c.json({ workers: registry.list().map(describeWorker), cluster: d.cluster?.status() ?? null }));
  app.get('/workers/:id', (c) => {
    const w = registry.get(c.req.param('id'));
    if (!w) return openAIError(404, `no worker "${c.req.param('id')}"`, 'not_found_error');
    const dump = c.req.query('dump') !== undefined;
    return c.json({ ...describeWorker(w), ...(dump ? { trees: Object.fromEntries(w.ranks.map((r) => [r, snakeKeys(index.dump(`${w.id}:${r}`))])) } : {}) });
  });
  app.post('/workers', async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return openAIError(400, 'request body is not valid JSON');
    }
    try {
      const w = await registry.add(parseWorker(body));
      return c.json(describeWorker(w), 201);
    } catch (e) {
      if (e instanceof ConfigError) return openAIError(/already exists/.test(e.message) ? 409 : 400, e.message);
      throw e;
    }
  });
  app.delete('/workers/:id', async (c) => {
    const id = c.req.param('id');
    if (!(await registry.remove(id))) return openAIError(404, `no worker "${id}"`, 'not_found_error');
    return c.json({ removed: id });
  });

  /** Cluster mode: the part of the load other replicas sent. */
  function remoteOf(source: string) {
    if (!(load instanceof SharedLoad)) return {};
    const r = load.remoteOf(source);
    return { remote: { in_flight: r.inFlight, pending_prefill_tokens: r.pendingPrefillTokens, active_decodes: r.activeDecodes } };
  }

  function describeWorker(w: WorkerEntry) {
    return {
      id: w.id,
      url: w.url,
      state: w.state,
      in_rotation: w.state === 'healthy' && !w.draining,
      draining: w.draining,
      consecutive_failures: w.consecutiveFailures,
      last_error: w.lastError,
      last_probe_at: w.lastProbeAt,
      stalls: w.stalls,
      stalled_until: w.stalledUntil > Date.now() ? w.stalledUntil : null,
      models: w.models?.map((m) => ({ id: m.id, max_model_len: m.maxModelLen, parent: m.parent ?? null })) ?? null,
      reported_load: snakeKeys(load.reportedOf(`${w.id}:${w.ranks[0]}`) ?? null),
      prediction: d.prediction?.(w.id) ?? null,
      ranks: w.ranks.map((r) => {
        const source = `${w.id}:${r}`;
        const feed = w.streams.get(r);
        const l = load.get(source);
        return {
          rank: r,
          source,
          events: feed ? { endpoint: feed.endpoint, replay_endpoint: feed.replayEndpoint, topic: feed.topic, ...snakeKeys(feed.health()) } : null,
          tree: snakeKeys(index.stats(source)),
          load: { in_flight: l.inFlight, pending_prefill_tokens: l.pendingPrefillTokens, active_decodes: l.activeDecodes, ...remoteOf(source) },
        };
      }),
    };
  }
}

import { timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Hono, type Context } from 'hono';
import { PrefixIndex } from '../src/index/index.js';
import type { RouterConfig } from './config.js';
import { ConfigError, parseWorker } from './config.js';
import { openAIError } from './errors.js';
import { LoadTracker } from './load.js';
import { RouterMetrics } from './metrics.js';
import { DecisionLog } from './decision-log.js';
import { createPolicy } from './policies/index.js';
import type { Candidate, Policy, RouteRequest, Scored } from './policies/policy.js';
import { forward } from './proxy.js';
import { closeUpstreamPools } from './upstream.js';
import { Registry, type WorkerEntry } from './registry.js';
import { parseBody, type Endpoint, type PromptOf } from './requests.js';
import { TokenizeError, TokenizePool } from './tokenize-pool.js';
import type { TokenizerSpec } from './config.js';

export interface RouterService {
  app: Hono;
  config: RouterConfig;
  registry: Registry;
  index: PrefixIndex;
  load: LoadTracker;
  policy: Policy;
  metrics: RouterMetrics;
  pool: TokenizePool;
  /** Adds the configured workers, warms the tokenizer, starts health probes. */
  start(): Promise<void>;
  close(): Promise<void>;
}

export function createRouter(config: RouterConfig, log: (msg: string) => void = () => {}): RouterService {
  const index = new PrefixIndex({ provisionalTtlMs: config.cache_aware.provisional_ttl_ms });
  const load = new LoadTracker();
  const policy = createPolicy(config, index);
  const registry = new Registry({
    index,
    load,
    health: config.health,
    onSourceRemoved: (s) => policy.forget?.(s),
    log,
  });
  const metrics = new RouterMetrics(registry, load, index);
  const pool = new TokenizePool(config.tokenizer_threads);
  const adminKey = config.admin_key ?? process.env.KV_ROUTER_ADMIN_KEY ?? null;
  const decisionLog = config.decision_log ? new DecisionLog(config.decision_log, log) : null;

  const specOf = (c: Candidate): TokenizerSpec => registry.get(c.workerId)?.config.tokenizer ?? config.tokenizer;

  /** Tokenizes once per distinct tokenizer among the candidates (usually one). */
  async function routeRequest(prompt: PromptOf, candidates: Candidate[]): Promise<RouteRequest> {
    if (prompt.kind === 'ids') return { tokensFor: () => prompt.ids, lora: null };
    // Not renderable here (non-text parts): no tokens, so routing weighs load only.
    if (prompt.kind === 'unroutable') return { tokensFor: () => [], lora: null };
    const byKey = new Map<string, Promise<number[]>>();
    const t0 = performance.now();
    for (const c of candidates) {
      if (!byKey.has(c.tokenizerKey)) byKey.set(c.tokenizerKey, pool.tokenize(specOf(c), prompt.input));
    }
    const tokens = new Map<string, number[]>();
    for (const [k, p] of byKey) tokens.set(k, await p);
    metrics.tokenizeSeconds.observe((performance.now() - t0) / 1000);
    return { tokensFor: (c) => tokens.get(c.tokenizerKey) ?? [], lora: null };
  }

  type Routed = { ok: true; req: RouteRequest; ranked: Scored[]; raw: Uint8Array; stream: boolean } | { ok: false; res: Response };

  /** Parses, tokenizes and ranks; with `commit`, the pick is recorded at once (no await between rank and record, so a concurrent burst sees it). */
  async function decide(c: Context, endpoint: Endpoint, commit: boolean): Promise<Routed> {
    const ep = endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions';
    const declared = Number(c.req.header('content-length') ?? 0);
    if (declared > config.max_body_bytes) return { ok: false, res: openAIError(413, `request body over ${config.max_body_bytes} bytes`) };
    const raw = new Uint8Array(await c.req.arrayBuffer());
    if (raw.byteLength > config.max_body_bytes) return { ok: false, res: openAIError(413, `request body over ${config.max_body_bytes} bytes`) };
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(raw));
    } catch (e) {
      metrics.requests.inc({ worker: 'none', outcome: 'bad_request', endpoint: ep });
      return { ok: false, res: openAIError(400, `request body is not valid JSON: ${(e as Error).message}`) };
    }
    const parsed = parseBody(endpoint, json);
    if (!parsed.ok) {
      metrics.requests.inc({ worker: 'none', outcome: 'bad_request', endpoint: ep });
      return { ok: false, res: openAIError(400, parsed.message, 'invalid_request_error', null, parsed.param) };
    }
    const candidates = registry.candidates();
    if (candidates.length === 0) {
      metrics.requests.inc({ worker: 'none', outcome: 'no_worker', endpoint: ep });
      const known = registry.list().length;
      return {
        ok: false,
        res: openAIError(503, known === 0 ? 'no workers are configured; add one with POST /workers' : `no healthy worker (0 of ${known} in rotation)`, 'service_unavailable', 'no_healthy_worker'),
      };
    }
    let req: RouteRequest;
    try {
      req = await routeRequest(parsed.prompt, candidates);
    } catch (e) {
      metrics.requests.inc({ worker: 'none', outcome: 'bad_request', endpoint: ep });
      if (e instanceof TokenizeError) return { ok: false, res: openAIError(400, `cannot tokenize the prompt: ${e.message}`) };
      throw e;
    }
    const t0 = performance.now();
    const ranked = policy.rank(req, candidates);
    if (commit && ranked[0]) {
      policy.routed?.(req, ranked[0].candidate);
      decisionLog?.write(policy.name, ranked);
    }
    metrics.decisionSeconds.observe({ policy: policy.name }, (performance.now() - t0) / 1000);
    return { ok: true, req, ranked, raw, stream: parsed.stream };
  }

  const app = new Hono();

  const completion = (endpoint: Endpoint) => async (c: Context) => {
    const d = await decide(c, endpoint, true);
    if (!d.ok) return d.res;
    const auth = c.req.header('authorization');
    return forward({
      path: endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions',
      body: d.raw,
      ranked: d.ranked,
      signal: c.req.raw.signal,
      maxAttempts: config.retry.max_attempts,
      backoffMs: config.retry.backoff_ms,
      headerTimeoutMs: config.upstream_header_timeout_ms,
      streaming: d.stream,
      registry,
      load,
      metrics,
      // Retries: the new pick learns too (the first was recorded when ranked).
      onAttempt: (s, attempt) => attempt > 0 && policy.routed?.(d.req, s.candidate),
      // The client's own key goes to the engine unless it is the router's admin key.
      ...(auth && !(adminKey && auth === `Bearer ${adminKey}`) ? { headers: { authorization: auth } } : {}),
    });
  };
  app.post('/v1/completions', completion('completions'));
  app.post('/v1/chat/completions', completion('chat'));

  app.post('/route', async (c) => {
    const isChat = await isChatBody(c);
    const d = await decide(c, isChat ? 'chat' : 'completions', false);
    if (!d.ok) return d.res;
    const pick = d.ranked[0]!;
    return c.json({
      policy: policy.name,
      endpoint: isChat ? '/v1/chat/completions' : '/v1/completions',
      prompt_tokens: pick.promptTokens,
      pick: { worker: pick.candidate.workerId, rank: pick.candidate.rank, source: pick.candidate.source, expected_cached_tokens: pick.matchedTokens, cost: pick.cost },
      candidates: d.ranked.map((s) => ({
        worker: s.candidate.workerId,
        rank: s.candidate.rank,
        source: s.candidate.source,
        trusted: s.candidate.trusted,
        prompt_tokens: s.promptTokens,
        matched_tokens: s.matchedTokens,
        index_matched_tokens: s.indexMatchedTokens,
        by_medium: s.byMedium ?? {},
        terms: s.terms,
        cost: s.cost,
        load: { in_flight: s.candidate.load.inFlight, pending_prefill_tokens: s.candidate.load.pendingPrefillTokens, active_decodes: s.candidate.load.activeDecodes },
      })),
    });
  });

  app.get('/health', (c) => {
    const healthy = registry.healthyCount();
    const total = registry.list().length;
    return c.json({ status: healthy > 0 ? 'ok' : 'no_healthy_worker', workers: total, healthy_workers: healthy, policy: policy.name }, healthy > 0 ? 200 : 503);
  });

  app.get('/metrics', async (c) => {
    const text = await metrics.registry.metrics();
    return c.text(text, 200, { 'content-type': metrics.registry.contentType });
  });

  app.get('/v1/models', async () => {
    const healthy = registry.list().filter((w) => w.state === 'healthy');
    if (healthy.length === 0) return openAIError(503, 'no healthy worker', 'service_unavailable', 'no_healthy_worker');
    const seen = new Map<string, unknown>();
    await Promise.all(
      healthy.map(async (w) => {
        try {
          const r = await fetch(`${w.url}/v1/models`, { signal: AbortSignal.timeout(config.health.timeout_ms * 2) });
          if (!r.ok) return;
          const j = (await r.json()) as { data?: { id?: string }[] };
          for (const m of j.data ?? []) if (m.id && !seen.has(m.id)) seen.set(m.id, m);
        } catch {
          /* skip that worker */
        }
      }),
    );
    return new Response(JSON.stringify({ object: 'list', data: [...seen.values()] }), { headers: { 'content-type': 'application/json' } });
  });

  // Admin: /workers, behind a bearer key when one is configured.
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

  app.get('/workers', (c) => c.json({ workers: registry.list().map(describeWorker) }));
  app.get('/workers/:id', (c) => {
    const w = registry.get(c.req.param('id'));
    if (!w) return openAIError(404, `no worker "${c.req.param('id')}"`, 'not_found_error');
    const dump = c.req.query('dump') !== undefined;
    return c.json({ ...describeWorker(w), ...(dump ? { trees: Object.fromEntries(w.ranks.map((r) => [r, index.dump(`${w.id}:${r}`)])) } : {}) });
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

  app.notFound(() => openAIError(404, 'no such route', 'not_found_error'));
  app.onError((err) => {
    log(`internal error: ${err.stack ?? err.message}`);
    return openAIError(500, `router error: ${err.message}`, 'internal_error');
  });

  function describeWorker(w: WorkerEntry) {
    return {
      id: w.id,
      url: w.url,
      state: w.state,
      in_rotation: w.state === 'healthy',
      consecutive_failures: w.consecutiveFailures,
      last_error: w.lastError,
      last_probe_at: w.lastProbeAt,
      stalls: w.stalls,
      stalled_until: w.stalledUntil > Date.now() ? w.stalledUntil : null,
      reported_load: load.reportedOf(`${w.id}:${w.ranks[0]}`) ?? null,
      ranks: w.ranks.map((r) => {
        const source = `${w.id}:${r}`;
        const feed = w.streams.get(r);
        const l = load.get(source);
        return {
          rank: r,
          source,
          events: feed ? { endpoint: feed.endpoint, replay_endpoint: feed.replayEndpoint, topic: feed.topic, ...feed.health() } : null,
          tree: index.stats(source),
          load: { in_flight: l.inFlight, pending_prefill_tokens: l.pendingPrefillTokens, active_decodes: l.activeDecodes },
        };
      }),
    };
  }

  return {
    app,
    config,
    registry,
    index,
    load,
    policy,
    metrics,
    pool,
    async start() {
      const specs = new Map<string, TokenizerSpec>([[JSON.stringify(config.tokenizer), config.tokenizer]]);
      for (const w of config.workers) if (w.tokenizer) specs.set(JSON.stringify(w.tokenizer), w.tokenizer);
      for (const spec of specs.values()) assertTokenizerFiles(spec);
      for (const w of config.workers) await registry.add(w);
      registry.startProbing();
      // Tokenizers load in the background: the server listens at once, early requests wait for them.
      for (const spec of specs.values()) {
        pool.warm(spec).catch((e) => log(`tokenizer failed to load: ${(e as Error).message}`));
      }
    },
    async close() {
      await registry.close();
      await pool.close();
      await decisionLog?.close();
      closeUpstreamPools();
    },
  };
}

/** /route takes either body: chat if it has messages. */
async function isChatBody(c: Context): Promise<boolean> {
  try {
    const j = (await c.req.raw.clone().json()) as Record<string, unknown>;
    return Array.isArray(j?.messages);
  } catch {
    return false;
  }
}

/** A missing tokenizer file is a config error at start, not a 400 on every request. */
function assertTokenizerFiles(spec: TokenizerSpec): void {
  if (spec === 'default') return;
  for (const f of [spec.tokenizer_json, spec.tokenizer_config]) {
    if (f !== undefined && !existsSync(f)) throw new ConfigError(`tokenizer file not found: ${f}`);
  }
}

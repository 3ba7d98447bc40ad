import { existsSync } from 'node:fs';
import { Hono } from 'hono';
import { PrefixIndex } from '../src/index/index.js';
import type { RouterConfig, TokenizerSpec } from './config.js';
import { ConfigError } from './config.js';
import { openAIError } from './errors.js';
import { randomBytes } from 'node:crypto';
import { LocalLoad, type LoadAccounting } from './load.js';
import { ClusterLink } from './cluster/link.js';
import { SharedLoad } from './cluster/shared-load.js';
import { RouterMetrics } from './metrics.js';
import { DecisionLog } from './decision-log.js';
import type { SourceLifecycle } from './membership.js';
import { createPolicy } from './policies/index.js';
import type { Policy } from './policies/policy.js';
import { RequestPipeline } from './pipeline.js';
import { rateLearnerOf } from './cost/rates.js';
import { closeUpstreamPools } from './upstream.js';
import { Registry } from './registry.js';
import { TokenizePool } from './tokenize-pool.js';
import { openAIRoutes } from './routes/openai.js';
import { opsRoutes } from './routes/ops.js';
import { adminRoutes } from './routes/admin.js';
import { dashboardRoutes } from './routes/dashboard.js';
import type { DashboardHub } from './dashboard/hub.js';
import { promReader } from './dashboard/metric-values.js';
import { DiscoveryController, discoverySources } from './discovery/index.js';
import { PredictionAccuracy } from './observe/accuracy.js';
import { evidenceOf } from './observe/evidence.js';
import { TokenParity, tapBatches } from './observe/parity.js';
import { RecentDecisions } from './observe/recent-decisions.js';
import { HitBound } from './observe/hit-bound.js';
import { requestIdAndAccessLog } from '../src/http/access-log.js';
import { methodNotAllowed } from '../src/http/method-not-allowed.js';
import type { Logger } from '../src/log/logger.js';

export interface RouterService {
  app: Hono;
  config: RouterConfig;
  registry: Registry;
  index: PrefixIndex;
  load: LoadAccounting;
  policy: Policy;
  metrics: RouterMetrics;
  pool: TokenizePool;
  pipeline: RequestPipeline;
  /** The dashboard's live updates (closed first on shutdown: its streams would hold the drain). */
  dashboard: DashboardHub;
  /** Keeps the membership equal to the discovered workers (static `workers`, discovery.*). */
  discovery: DiscoveryController;
  /** The NATS link when config.cluster is set. */
  cluster: ClusterLink | null;
  recentDecisions: RecentDecisions;
  accuracy: PredictionAccuracy;
  parity: TokenParity;
  /** Adds the configured workers, warms the tokenizer, starts health probes. */
  start(): Promise<void>;
  /** goodbye=false: leave as a crashed replica would (tests: the share must expire by TTL). */
  close(opts?: { goodbye?: boolean }): Promise<void>;
}

/** The composition root: builds the parts, wires them one way, mounts the route modules. */
export function createRouter(config: RouterConfig, log: (msg: string) => void = () => {}, opts: { accessLog?: Logger } = {}): RouterService {
  const index = new PrefixIndex({ provisionalTtlMs: config.cache_aware.provisional_ttl_ms });
  const replicaId = config.cluster ? `${config.cluster.replica_id ?? 'r'}-${randomBytes(4).toString('hex')}` : null;
  const shared = replicaId !== null ? new SharedLoad(replicaId) : null;
  const load: LoadAccounting = shared ?? new LocalLoad();
  const policy = createPolicy(config, index);
  const parity = new TokenParity(log);
  const registry = new Registry({
    index: tapBatches(index, (s, b) => parity.onBatch(s, b)),
    load,
    health: config.health,
    onSourceRemoved: (s) => policy.forget?.(s),
    eventsBind: config.events_bind,
    log,
  });
  const cluster = shared && config.cluster ? new ClusterLink({ ...config.cluster, replica_id: replicaId! }, shared, index, log) : null;
  const accuracy = new PredictionAccuracy((id) => evidenceOf(registry, parity, id), log);
  const recentDecisions = new RecentDecisions();
  const metrics = new RouterMetrics(registry, load, index, cluster, (id) => accuracy.accuracy(id));
  registry.membership.onLeave((w) => {
    void metrics.forgetWorker(w.id);
    accuracy.forget(w.id);
    parity.forget(w.id);
  });
  const pool = new TokenizePool(config.tokenizer_threads);
  const adminKey = config.admin_key ?? process.env.KV_ROUTER_ADMIN_KEY ?? null;
  const decisionLog = config.decision_log ? new DecisionLog(config.decision_log, log) : null;
  const pipeline = new RequestPipeline({ config, registry, load, policy, pool, metrics, decisionLog, cluster, recentDecisions, accuracy, parity, rates: rateLearnerOf(policy), hitBound: new HitBound() });

  const discovery = new DiscoveryController({
    registry,
    load,
    sources: discoverySources(config, log),
    drainTimeoutMs: config.discovery.drain_timeout_ms,
    log,
  });

  const app = new Hono();
  app.use('*', requestIdAndAccessLog(opts.accessLog ?? null));
  openAIRoutes(app, { pipeline, policy, maxBodyBytes: config.max_body_bytes, adminKey });
  opsRoutes(app, { registry, metrics, policy, cluster, modelsTimeoutMs: config.health.timeout_ms * 2 });
  adminRoutes(app, { registry, load, index, adminKey, cluster, prediction: (id) => accuracy.view(id) });
  const dashboard = dashboardRoutes(app, { registry, load, index, metrics: promReader(metrics.registry), decisions: recentDecisions, policy, predictionOf: (id) => accuracy.view(id), adminKey });
  methodNotAllowed(app, (c, allow) => openAIError(405, `${c.req.method} is not allowed on ${c.req.path} (allowed: ${allow.join(', ')})`, 'invalid_request_error', 'method_not_allowed'));
  app.notFound(() => openAIError(404, 'no such route', 'not_found_error'));
  app.onError((err) => {
    log(`internal error: ${err.stack ?? err.message}`);
    return openAIError(500, `router error: ${err.message}`, 'internal_error');
  });

  return {
    app,
    config,
    registry,
    index,
    load,
    policy,
    metrics,
    pool,
    pipeline,
    dashboard,
    discovery,
    cluster,
    recentDecisions,
    accuracy,
    parity,
    async start() {
      const specs = new Map<string, TokenizerSpec>([[JSON.stringify(config.tokenizer), config.tokenizer]]);
      for (const w of config.workers) if (w.tokenizer) specs.set(JSON.stringify(w.tokenizer), w.tokenizer);
      for (const spec of specs.values()) assertTokenizerFiles(spec);
      await discovery.start();
      registry.startProbing();
      cluster?.start();
      // Tokenizers load in the background: the server listens at once, early requests wait for them.
      for (const spec of specs.values()) {
        pool.warm(spec).catch((e) => log(`tokenizer failed to load: ${(e as Error).message}`));
      }
    },
    async close(opts = {}) {
      dashboard.close();
      await discovery.close();
      await cluster?.close(opts.goodbye ?? true);
      await registry.close();
      await pool.close();
      await decisionLog?.close();
      closeUpstreamPools();
    },
  };
}

/** A missing tokenizer file is a config error at start, not a 400 on every request. */
function assertTokenizerFiles(spec: TokenizerSpec): void {
  if (spec === 'default') return;
  for (const f of [spec.tokenizer_json, spec.tokenizer_config]) {
    if (f !== undefined && !existsSync(f)) throw new ConfigError(`tokenizer file not found: ${f}`);
  }
}

import type { LoadView, ReportedLoad } from '../load.js';
import type { RecentDecisions } from '../observe/recent-decisions.js';
import type { Registry } from '../registry.js';
import { sourceId } from '../registry.js';
import type { MetricReader } from './metric-values.js';
import type { HotPrefixInput, MetricsInput, SnapshotInput } from './snapshot.js';

/** What the dashboard reads of the running router (the I/O shell around buildSnapshot). */
export interface DashboardSources {
  registry: Registry;
  load: LoadView & { reportedOf(source: string): ReportedLoad | undefined };
  index: { stats(source: string): { blocks: number; provisionalBlocks: number; copies?: Record<string, number> } };
  metrics: MetricReader;
  decisions: RecentDecisions;
  policy: { name: string; hotPrefixes?(n: number): HotPrefixInput[] };
  /** The `prediction` object /workers shows per worker (accuracy loop); its `warning` string is shown. */
  predictionOf?: (workerId: string) => unknown;
}

function warningOf(p: unknown): string | null {
  const w = p !== null && typeof p === 'object' ? (p as { warning?: unknown }).warning : undefined;
  if (typeof w === 'string') return w;
  return w !== null && typeof w === 'object' && typeof (w as { message?: unknown }).message === 'string' ? (w as { message: string }).message : null;
}

export const HOT_PREFIXES_SHOWN = 10;

/** Metric names the dashboard reads (names, not code: some are exported by other parts, or not yet). */
export const METRIC_NAMES: Record<keyof MetricsInput, string[]> = {
  requests: ['kv_router_requests_total'],
  ttfb: ['kv_router_ttfb_seconds'],
  prompt_tokens: ['kv_router_prompt_tokens_total'],
  predicted_cached: ['kv_router_predicted_cached_tokens_total', 'kv_router_expected_cached_tokens_total'],
  actual_cached: ['kv_router_actual_cached_tokens_total'],
  accuracy: ['kv_router_prediction_accuracy'],
  routed_prompt_tokens: ['kv_router_routed_prompt_tokens_total'],
  bound_cached: ['kv_router_bound_cached_tokens_total'],
};

export async function collectInput(s: DashboardSources, now = Date.now()): Promise<SnapshotInput> {
  const metrics = {} as MetricsInput;
  for (const [key, names] of Object.entries(METRIC_NAMES) as [keyof MetricsInput, string[]][]) {
    metrics[key] = null;
    for (const name of names) {
      const v = await s.metrics(name);
      if (v !== null) {
        metrics[key] = v;
        break;
      }
    }
  }
  const workers = s.registry.list().map((w) => ({
    id: w.id,
    url: w.url,
    state: w.state,
    draining: w.draining,
    last_error: w.lastError,
    prediction_warning: warningOf(s.predictionOf?.(w.id)),
    ranks: w.ranks.map((rank) => {
      const source = sourceId(w.id, rank);
      const st = s.index.stats(source);
      const l = s.load.effective(source);
      return {
        rank,
        source,
        stream: s.registry.streamHealth(w, rank),
        blocks: st.blocks,
        blocks_by_tier: st.copies ?? {},
        provisional_blocks: st.provisionalBlocks,
        capacity_blocks: s.load.reportedOf(source)?.numBlocks ?? null,
        in_flight: l.inFlight,
        queued_prefill_tokens: l.pendingPrefillTokens,
      };
    }),
  }));
  const known = new Set(workers.flatMap((w) => w.ranks.map((r) => r.source)));
  const hot = (s.policy.hotPrefixes?.(HOT_PREFIXES_SHOWN) ?? []).map((h) => ({ ...h, holders: h.holders.filter((x) => known.has(x)) }));
  return { now_ms: now, policy: s.policy.name, workers, metrics, decisions: s.decisions.list(), hot_prefixes: hot };
}

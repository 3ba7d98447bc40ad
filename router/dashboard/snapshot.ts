/**
 * The dashboard's picture of the router, as one JSON document: a pure function of what the
 * router knows (fleet, metric samples, recent decisions, hot prefixes) and of the previous
 * snapshot's state (rates and interval quantiles are differences between two snapshots).
 * Never carries prompt text or token ids: decisions are copied field by field, prefixes are keys.
 */
import type { StreamHealth } from '../streams.js';
import type { DecisionRecord } from '../observe/recent-decisions.js';
import { bucketTotals, quantileBetween, sumBy, type MetricSample } from './metric-values.js';
import { trustReason } from './trust.js';

export const SERIES_POINTS = 120;
export const DECISIONS_SHOWN = 20;

export interface RankInput {
  rank: number;
  source: string;
  stream: StreamHealth | null;
  blocks: number;
  /** Physical copies by medium (GPU, CPU, disk) when the index knows them. */
  blocks_by_tier: Record<string, number>;
  provisional_blocks: number;
  /** The worker's cache size in blocks, when its /load says. */
  capacity_blocks: number | null;
  in_flight: number;
  queued_prefill_tokens: number;
}

export interface WorkerInput {
  id: string;
  url: string;
  state: string;
  draining: boolean;
  last_error: string | null;
  /** The accuracy loop's warning for this worker (its actual hits fall short of predicted), if any. */
  prediction_warning: string | null;
  ranks: RankInput[];
}

/** Samples by metric name; null (or absent) when the router does not export that metric. */
export interface MetricsInput {
  requests: MetricSample[] | null;
  ttfb: MetricSample[] | null;
  prompt_tokens: MetricSample[] | null;
  predicted_cached: MetricSample[] | null;
  actual_cached: MetricSample[] | null;
  accuracy: MetricSample[] | null;
  /** The hit rate's upper bound since start: its numerator and denominator (router/observe/hit-bound.ts). */
  routed_prompt_tokens?: MetricSample[] | null;
  bound_cached?: MetricSample[] | null;
}

export interface HotPrefixInput {
  key: string;
  requests: number;
  holders: string[];
}

export interface SnapshotInput {
  now_ms: number;
  policy: string;
  workers: WorkerInput[];
  metrics: MetricsInput;
  decisions: readonly DecisionRecord[];
  hot_prefixes: HotPrefixInput[];
}

export interface FleetRow {
  worker: string;
  rank: number;
  url: string;
  state: string;
  in_rotation: boolean;
  draining: boolean;
  last_error: string | null;
  trusted: boolean | null;
  trust_reason: string;
  blocks: number;
  blocks_by_tier: Record<string, number>;
  provisional_blocks: number;
  cache_fill: number | null;
  in_flight: number;
  queued_prefill_tokens: number;
  requests_per_s: number | null;
  predicted_hit_rate: number | null;
  actual_hit_rate: number | null;
  prediction_accuracy: number | null;
  prediction_warning: string | null;
  lag_ms: number | null;
  gaps: number | null;
  replays: number | null;
  resets: number | null;
}

export interface Series {
  /** Seconds since the epoch. */
  t: number[];
  requests_per_s: (number | null)[];
  ttfb_p50_ms: (number | null)[];
  ttfb_p99_ms: (number | null)[];
  hit_rate_actual: (number | null)[];
  hit_rate_predicted: (number | null)[];
  /** Since start: one unlimited cache of every routed prompt (the best any routing could do). */
  hit_rate_bound: (number | null)[];
  /** In flight per worker (all ranks). */
  load: Record<string, (number | null)[]>;
}

export interface Snapshot {
  at_ms: number;
  policy: string;
  totals: { workers: number; healthy: number; requests_per_s: number | null; in_flight: number };
  fleet: FleetRow[];
  series: Series;
  decisions: DecisionRecord[];
  hot_prefixes: { hash: string; length: number; requests: number; holders: string[] }[];
  /** Which optional metrics the router exports (the page shows "–" for the others). */
  present: Record<keyof MetricsInput, boolean>;
}

/** What the next snapshot needs of this one. */
export interface SnapshotState {
  at_ms: number;
  requests: Record<string, number>;
  ttfb_buckets: Record<string, number>;
  prompt: number;
  predicted: number;
  actual: number;
  series: Series;
}

const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b <= 0 ? null : a / b);

function boundSinceStart(m: MetricsInput): number | null {
  const total = (v: MetricSample[] | null | undefined) => (v ? v.reduce((a, x) => a + x.value, 0) : null);
  const prompt = total(m.routed_prompt_tokens);
  const bound = total(m.bound_cached);
  return prompt === null || bound === null || prompt <= 0 ? null : bound / prompt;
}

export function buildSnapshot(input: SnapshotInput, prev: SnapshotState | null): { snapshot: Snapshot; state: SnapshotState } {
  const m = input.metrics;
  const requests = m.requests ? sumBy(m.requests.filter((s) => s.labels.worker !== 'none'), 'worker') : {};
  const prompt = m.prompt_tokens ? sumBy(m.prompt_tokens, 'worker') : {};
  const predicted = m.predicted_cached ? sumBy(m.predicted_cached, 'worker') : null;
  const actual = m.actual_cached ? sumBy(m.actual_cached, 'worker') : null;
  const accuracy = m.accuracy ? sumBy(m.accuracy, 'worker') : null;
  const buckets = m.ttfb ? bucketTotals(m.ttfb) : {};
  const dt = prev ? (input.now_ms - prev.at_ms) / 1000 : 0;
  const rate = (w: string) => (prev && dt > 0 ? Math.max(0, (requests[w] ?? 0) - (prev.requests[w] ?? 0)) / dt : null);

  const fleet: FleetRow[] = [];
  for (const w of input.workers) {
    for (const r of w.ranks) {
      const s = r.stream;
      fleet.push({
        worker: w.id,
        rank: r.rank,
        url: w.url,
        state: w.state,
        in_rotation: w.state === 'healthy' && !w.draining,
        draining: w.draining,
        last_error: w.last_error,
        trusted: s ? s.trusted : null,
        trust_reason: trustReason(s),
        blocks: r.blocks,
        blocks_by_tier: { ...r.blocks_by_tier },
        provisional_blocks: r.provisional_blocks,
        cache_fill: r.capacity_blocks ? Math.min(1, r.blocks / r.capacity_blocks) : null,
        in_flight: r.in_flight,
        queued_prefill_tokens: r.queued_prefill_tokens,
        requests_per_s: rate(w.id),
        predicted_hit_rate: predicted ? ratio(predicted[w.id], prompt[w.id]) : null,
        actual_hit_rate: actual ? ratio(actual[w.id], prompt[w.id]) : null,
        prediction_accuracy: accuracy?.[w.id] ?? null,
        prediction_warning: w.prediction_warning,
        lag_ms: s?.lagMs ?? null,
        gaps: s?.gaps ?? null,
        replays: s?.replays ?? null,
        resets: s?.resets ?? null,
      });
    }
  }

  const totalRate = prev && dt > 0 ? Math.max(0, sum(requests) - sum(prev.requests)) / dt : null;
  const promptNow = sum(prompt);
  const predictedNow = predicted ? sum(predicted) : 0;
  const actualNow = actual ? sum(actual) : 0;
  const dPrompt = prev ? promptNow - prev.prompt : 0;
  const q = (p: number) => {
    const v = prev && m.ttfb ? quantileBetween(prev.ttfb_buckets, buckets, p) : null;
    return v === null ? null : v * 1000;
  };
  const load: Record<string, number> = {};
  for (const row of fleet) load[row.worker] = (load[row.worker] ?? 0) + row.in_flight;
  const series = appendPoint(prev?.series ?? emptySeries(), {
    t: input.now_ms / 1000,
    requests_per_s: totalRate,
    ttfb_p50_ms: q(0.5),
    ttfb_p99_ms: q(0.99),
    hit_rate_actual: actual && dPrompt > 0 ? (actualNow - prev!.actual) / dPrompt : null,
    hit_rate_predicted: predicted && dPrompt > 0 ? (predictedNow - prev!.predicted) / dPrompt : null,
    hit_rate_bound: boundSinceStart(m),
    load,
  });

  const snapshot: Snapshot = {
    at_ms: input.now_ms,
    policy: input.policy,
    totals: {
      workers: input.workers.length,
      healthy: input.workers.filter((w) => w.state === 'healthy').length,
      requests_per_s: totalRate,
      in_flight: sum(load),
    },
    fleet,
    series,
    decisions: input.decisions.slice(-DECISIONS_SHOWN).reverse().map(copyDecision),
    hot_prefixes: input.hot_prefixes.map((h) => {
      const [length, h1 = '', h2 = ''] = h.key.split(':');
      return { hash: (h1 + h2).slice(0, 10), length: Number(length), requests: h.requests, holders: [...h.holders] };
    }),
    present: {
      requests: m.requests !== null,
      ttfb: m.ttfb !== null,
      prompt_tokens: m.prompt_tokens !== null,
      predicted_cached: m.predicted_cached !== null,
      actual_cached: m.actual_cached !== null,
      accuracy: m.accuracy !== null,
      routed_prompt_tokens: (m.routed_prompt_tokens ?? null) !== null,
      bound_cached: (m.bound_cached ?? null) !== null,
    },
  };
  const state: SnapshotState = { at_ms: input.now_ms, requests, ttfb_buckets: buckets, prompt: promptNow, predicted: predictedNow, actual: actualNow, series };
  return { snapshot, state };
}

function emptySeries(): Series {
  return { t: [], requests_per_s: [], ttfb_p50_ms: [], ttfb_p99_ms: [], hit_rate_actual: [], hit_rate_predicted: [], hit_rate_bound: [], load: {} };
}

type Point = { [K in Exclude<keyof Series, 'load'>]: Series[K][number] } & { load: Record<string, number> };

/** A new series with the point appended and the oldest dropped past SERIES_POINTS (the previous one is left as it was). */
function appendPoint(s: Series, p: Point): Series {
  const keep = <T>(a: T[], v: T) => [...a, v].slice(-SERIES_POINTS);
  const n = s.t.length;
  const load: Series['load'] = {};
  for (const w of new Set([...Object.keys(s.load), ...Object.keys(p.load)])) {
    const line = keep(s.load[w] ?? new Array<number | null>(n).fill(null), p.load[w] ?? null);
    if (line.some((v) => v !== null)) load[w] = line;
  }
  return {
    t: keep(s.t, p.t),
    requests_per_s: keep(s.requests_per_s, p.requests_per_s),
    ttfb_p50_ms: keep(s.ttfb_p50_ms, p.ttfb_p50_ms),
    ttfb_p99_ms: keep(s.ttfb_p99_ms, p.ttfb_p99_ms),
    hit_rate_actual: keep(s.hit_rate_actual, p.hit_rate_actual),
    hit_rate_predicted: keep(s.hit_rate_predicted, p.hit_rate_predicted),
    hit_rate_bound: keep(s.hit_rate_bound, p.hit_rate_bound),
    load,
  };
}

/** Field by field: whatever else a record may grow (a prompt, token ids) never reaches the page. */
function copyDecision(d: DecisionRecord): DecisionRecord {
  return {
    request_id: d.request_id,
    at_ms: d.at_ms,
    policy: d.policy,
    prompt_tokens: d.prompt_tokens,
    candidates: d.candidates.map((c) => ({
      worker: c.worker,
      rank: c.rank,
      matched_tokens: c.matched_tokens,
      in_flight: c.in_flight,
      queued_prefill_tokens: c.queued_prefill_tokens,
      cost: c.cost,
      terms: Object.fromEntries(Object.entries(c.terms).filter(([, v]) => typeof v === 'number')),
    })),
    pick: d.pick ? { worker: d.pick.worker, rank: d.pick.rank, predicted_cached_tokens: d.pick.predicted_cached_tokens } : null,
    outcome: d.outcome,
    actual_cached_tokens: d.actual_cached_tokens,
  };
}

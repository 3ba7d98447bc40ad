/** Figures of one run from its per-request results. */
import type { LoadSample, RequestResult } from './client.js';

export interface RunStats {
  policy: string;
  replicas: number;
  requests: number;
  ok: number;
  failed: number;
  /** Cached prompt tokens / prompt tokens, from the workers' own usage (successful requests). */
  hit_rate: number;
  prompt_tokens: number;
  cached_tokens: number;
  ttft_p50_ms: number;
  ttft_p90_ms: number;
  ttft_p99_ms: number;
  ttft_mean_ms: number;
  e2e_p50_ms: number;
  e2e_p90_ms: number;
  e2e_p99_ms: number;
  /** Successful requests per second of wall time (first send to last finish). */
  throughput_rps: number;
  /** Max over mean of the prefill tokens (prompt − cached) each worker computed. */
  imbalance: number;
  per_worker: Record<string, { requests: number; prefill_tokens: number; cached_tokens: number; prompt_tokens: number }>;
  wall_s: number;
  /** How late the client got behind the arrival schedule (ms, max). */
  client_max_lag_ms: number;
  /** A few distinct error messages. */
  errors: string[];
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  // Nearest rank.
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

const round = (x: number, d = 1) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : x);

export function runStats(policy: string, replicas: number, workerIds: string[], results: RequestResult[], wallMs: number, maxLagMs: number): RunStats {
  const ok = results.filter((r) => r.ok);
  const ttft = ok.map((r) => r.ttftMs!).sort((a, b) => a - b);
  const e2e = ok.map((r) => r.e2eMs!).sort((a, b) => a - b);
  let prompt = 0;
  let cached = 0;
  const per: RunStats['per_worker'] = {};
  for (const id of workerIds) per[id] = { requests: 0, prefill_tokens: 0, cached_tokens: 0, prompt_tokens: 0 };
  for (const r of ok) {
    prompt += r.promptTokens;
    cached += r.cachedTokens;
    const w = (per[r.worker ?? 'unknown'] ??= { requests: 0, prefill_tokens: 0, cached_tokens: 0, prompt_tokens: 0 });
    w.requests++;
    w.prompt_tokens += r.promptTokens;
    w.cached_tokens += r.cachedTokens;
    w.prefill_tokens += r.promptTokens - r.cachedTokens;
  }
  const loads = workerIds.map((id) => per[id]!.prefill_tokens);
  const mean = loads.reduce((a, b) => a + b, 0) / Math.max(1, loads.length);
  const first = Math.min(...results.map((r) => r.sentMs));
  const last = Math.max(...ok.map((r) => r.sentMs + r.e2eMs!));
  const span = ok.length ? (last - first) / 1000 : NaN;
  const errors = [...new Set(results.filter((r) => !r.ok).map((r) => r.error ?? '?'))].slice(0, 5);
  return {
    policy,
    replicas,
    requests: results.length,
    ok: ok.length,
    failed: results.length - ok.length,
    hit_rate: round(prompt ? cached / prompt : 0, 4),
    prompt_tokens: prompt,
    cached_tokens: cached,
    ttft_p50_ms: round(percentile(ttft, 50)),
    ttft_p90_ms: round(percentile(ttft, 90)),
    ttft_p99_ms: round(percentile(ttft, 99)),
    ttft_mean_ms: round(ttft.reduce((a, b) => a + b, 0) / Math.max(1, ttft.length)),
    e2e_p50_ms: round(percentile(e2e, 50)),
    e2e_p90_ms: round(percentile(e2e, 90)),
    e2e_p99_ms: round(percentile(e2e, 99)),
    throughput_rps: round(ok.length / span, 2),
    imbalance: round(mean > 0 ? Math.max(...loads) / mean : NaN, 3),
    per_worker: per,
    wall_s: round(wallMs / 1000, 1),
    client_max_lag_ms: round(maxLagMs),
    errors,
  };
}

/** Per-worker series of in-flight requests (running + waiting) over time, for the load plot. */
export function loadSeries(samples: LoadSample[], workers: number): { t: number; v: number }[][] {
  const series: { t: number; v: number }[][] = Array.from({ length: workers }, () => []);
  for (const s of samples) series[s.worker]?.push({ t: s.tMs / 1000, v: s.running + s.waiting });
  return series;
}

/** The figures that get a median and a spread when a run is repeated. */
export const SPREAD_FIELDS = ['hit_rate', 'ttft_p50_ms', 'ttft_p90_ms', 'ttft_p99_ms', 'e2e_p50_ms', 'e2e_p99_ms', 'throughput_rps', 'imbalance'] as const;
export type SpreadField = (typeof SPREAD_FIELDS)[number];

export interface RepeatedStats extends RunStats {
  /** How many times the run was repeated (fresh fleet each time). */
  repeats: number;
  /** min and max over the repeats of each figure whose median is reported. */
  spread: Record<SpreadField, [number, number]>;
  /** Each repeat's key figures, in order. */
  per_repeat: Pick<RunStats, SpreadField | 'failed'>[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Repeats of one run as one entry: the median of each figure (spread: min and max), failures and
 * tokens summed, per-worker figures from the repeat whose hit rate is the median.
 */
export function combineRepeats(all: RunStats[]): RepeatedStats {
  const byHit = [...all].sort((a, b) => a.hit_rate - b.hit_rate);
  const mid = byHit[(byHit.length - 1) >> 1]!;
  const out: RepeatedStats = {
    ...mid,
    requests: all.reduce((s, r) => s + r.requests, 0),
    ok: all.reduce((s, r) => s + r.ok, 0),
    failed: all.reduce((s, r) => s + r.failed, 0),
    prompt_tokens: all.reduce((s, r) => s + r.prompt_tokens, 0),
    cached_tokens: all.reduce((s, r) => s + r.cached_tokens, 0),
    errors: [...new Set(all.flatMap((r) => r.errors))].slice(0, 5),
    repeats: all.length,
    spread: {} as RepeatedStats['spread'],
    per_repeat: all.map((r) => ({ ...Object.fromEntries(SPREAD_FIELDS.map((f) => [f, r[f]])), failed: r.failed }) as RepeatedStats['per_repeat'][number]),
  };
  for (const f of SPREAD_FIELDS) {
    const v = all.map((r) => r[f]);
    out[f] = round(median(v), f === 'hit_rate' ? 4 : f === 'imbalance' ? 3 : 1);
    out.spread[f] = [Math.min(...v), Math.max(...v)];
  }
  return out;
}

/**
 * Issue 15's goals in words (measured, not asserted), for every cache_aware run of one router in the
 * report: plain `cache_aware` (the default cost) and the `cache_aware:ttft` / `cache_aware:weighted`
 * variants, so the cost change is measured against the old one in the same run.
 */
import type { Report } from './report.js';

type Stats = Report['policies'][string];

/** The policies users would pick instead of cache_aware. */
const BASELINES = ['round_robin', 'random', 'least_load', 'power_of_two', 'prefix_hash', 'approx_tree'];
const SYNTHETIC = ['system-prompt', 'multi-turn', 'shared-prompt'];

const x = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
const verdict = (ok: boolean) => (ok ? 'met' : 'not met');

export function costGoals(r: Report): string[] {
  const one = Object.entries(r.policies).filter(([, s]) => s.replicas === 1);
  const ours = one.filter(([k]) => k === 'cache_aware' || k.startsWith('cache_aware:'));
  const baselines = one.filter(([k]) => BASELINES.includes(k));
  const mixed = Array.isArray(r.fleet.speed_factors);
  const g: string[] = [];
  for (const [k, s] of ours) {
    if (mixed) g.push(...mixedFleet(k, s, r.policies.least_load));
    else if (r.workload === 'mooncake') g.push(...mooncake(k, s, r, baselines));
    else if (SYNTHETIC.includes(r.workload)) g.push(...synthetic(k, s, one));
  }
  return g;
}

function mooncake(k: string, s: Stats, r: Report, baselines: [string, Stats][]): string[] {
  const g: string[] = [];
  const rr = r.policies.round_robin;
  const ll = r.policies.least_load;
  if (rr) g.push(`${k} TTFT p99 vs round_robin ${x(s.ttft_p99_ms, rr.ttft_p99_ms)} (goal ≤ 0.5×): ${verdict(s.ttft_p99_ms <= 0.5 * rr.ttft_p99_ms)}`);
  if (ll) g.push(`${k} TTFT p99 vs least_load ${x(s.ttft_p99_ms, ll.ttft_p99_ms)} (goal ≤ 0.8×): ${verdict(s.ttft_p99_ms <= 0.8 * ll.ttft_p99_ms)}`);
  const frac = s.hit_rate / Math.max(1e-9, r.upper_bound_hit_rate);
  g.push(`${k} hit rate ${(frac * 100).toFixed(0)}% of the upper bound (goal ≥ 90%): ${verdict(frac >= 0.9)}`);
  if (baselines.length) {
    const [bk, best] = baselines.reduce((a, b) => (b[1].ttft_p50_ms < a[1].ttft_p50_ms ? b : a));
    g.push(`${k} TTFT p50 ${s.ttft_p50_ms} ms vs the best baseline's (${bk}) ${best.ttft_p50_ms} ms (goal: no worse): ${verdict(s.ttft_p50_ms <= best.ttft_p50_ms)}`);
  }
  return g;
}

function synthetic(k: string, s: Stats, all: [string, Stats][]): string[] {
  const best = (f: 'ttft_p50_ms' | 'ttft_p99_ms') => all.reduce((a, b) => (b[1][f] < a[1][f] ? b : a));
  const [k50, b50] = best('ttft_p50_ms');
  const [k99, b99] = best('ttft_p99_ms');
  const ok = s.ttft_p50_ms <= 1.05 * b50.ttft_p50_ms && s.ttft_p99_ms <= 1.05 * b99.ttft_p99_ms && s.imbalance < 1.5;
  return [
    `${k} TTFT p50 ${x(s.ttft_p50_ms, b50.ttft_p50_ms)} of the best (${k50}), p99 ${x(s.ttft_p99_ms, b99.ttft_p99_ms)} of the best (${k99}), imbalance ${s.imbalance} (goal: within 5% of the best on both, imbalance < 1.5): ${verdict(ok)}`,
  ];
}

function mixedFleet(k: string, s: Stats, ll: Stats | undefined): string[] {
  if (!ll) return [];
  const ok = s.ttft_p50_ms < ll.ttft_p50_ms && s.ttft_p99_ms < ll.ttft_p99_ms;
  return [`mixed fleet: ${k} TTFT p50/p99 ${s.ttft_p50_ms}/${s.ttft_p99_ms} ms vs least_load ${ll.ttft_p50_ms}/${ll.ttft_p99_ms} ms (goal: lower on both, no per-worker setting): ${verdict(ok)}`];
}

/**
 * The routing benchmark's issue-15 parts: `cache_aware:ttft` / `cache_aware:weighted` run variants (one
 * cost against the other in the same run), `--speed-factors` for a mixed fleet, and the goal lines.
 * The fleet test starts 2 real sim workers (one twice as fast) and a real router.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { costGoals } from '../../bench/routing/cost-goals.js';
import { liveChildren, splitPolicy, startFleet } from '../../bench/routing/fleet.js';
import { parseOptions, parseRunSpec, planRuns } from '../../bench/routing/main.js';
import { runKey, type Report } from '../../bench/routing/report.js';

test('run variants: cache_aware:ttft and cache_aware:weighted, alone or with replicas; other variants are refused', () => {
  assert.deepEqual(parseRunSpec('cache_aware:ttft'), { policy: 'cache_aware:ttft', replicas: 1, shared: null });
  assert.deepEqual(parseRunSpec('cache_aware:weighted@4/local'), { policy: 'cache_aware:weighted', replicas: 4, shared: false });
  assert.deepEqual(splitPolicy('cache_aware:ttft'), { policy: 'cache_aware', cost: 'ttft' });
  assert.deepEqual(splitPolicy('least_load'), { policy: 'least_load', cost: null });
  const o = parseOptions(['--replicas', '1', '--policies', 'least_load,cache_aware:weighted,cache_aware:ttft']);
  assert.ok(o !== 'help');
  assert.deepEqual(planRuns(o).map((r) => runKey(r.policy, r.replicas, r.shared)), ['least_load', 'cache_aware:weighted', 'cache_aware:ttft']);
  assert.throws(() => parseOptions(['--policies', 'round_robin:ttft']), /unknown policy variant "round_robin:ttft"/);
  assert.throws(() => parseOptions(['--policies', 'cache_aware:fast']), /cache_aware:ttft, cache_aware:weighted/);
});

test('--speed-factors: one positive factor per worker', () => {
  const o = parseOptions(['--workers', '4', '--speed-factors', '2,2,1,1']);
  assert.ok(o !== 'help');
  assert.deepEqual(o.speedFactors, [2, 2, 1, 1]);
  assert.throws(() => parseOptions(['--workers', '4', '--speed-factors', '2,1']), /2 factor\(s\) for 4 worker\(s\)/);
  assert.throws(() => parseOptions(['--workers', '2', '--speed-factors', '2,0']), /speed-factors/);
});

const stats = (ttft_p50_ms: number, ttft_p99_ms: number, hit_rate = 0.1, imbalance = 1.1) =>
  ({ policy: 'x', replicas: 1, ttft_p50_ms, ttft_p99_ms, hit_rate, imbalance }) as unknown as Report['policies'][string];
const report = (workload: string, policies: Record<string, Report['policies'][string]>, fleet: Record<string, unknown> = {}) =>
  ({ workload, upper_bound_hit_rate: 0.2, fleet, policies }) as unknown as Report;

test('goal lines: Mooncake ratios against round_robin and least_load, the bound, the best baseline p50', () => {
  const g = costGoals(report('mooncake', { round_robin: stats(900, 4000), least_load: stats(500, 2000), 'cache_aware:ttft': stats(450, 1500, 0.185), 'cache_aware:weighted': stats(600, 2500, 0.17) }));
  assert.ok(g.includes('cache_aware:ttft TTFT p99 vs round_robin 0.38× (goal ≤ 0.5×): met'), g.join('\n'));
  assert.ok(g.includes('cache_aware:ttft TTFT p99 vs least_load 0.75× (goal ≤ 0.8×): met'), g.join('\n'));
  assert.ok(g.includes('cache_aware:ttft hit rate 93% of the upper bound (goal ≥ 90%): met'), g.join('\n'));
  assert.ok(g.includes('cache_aware:weighted TTFT p50 600 ms vs the best baseline\'s (least_load) 500 ms (goal: no worse): not met'), g.join('\n'));
  assert.ok(g.includes('cache_aware:weighted hit rate 85% of the upper bound (goal ≥ 90%): not met'), g.join('\n'));
});

test('goal lines: synthetic workloads within 5% of the best run; a mixed fleet against least_load', () => {
  const syn = costGoals(report('multi-turn', { round_robin: stats(300, 1000), cache_aware: stats(210, 800, 0.5, 1.2), approx_tree: stats(200, 900) }));
  assert.deepEqual(syn, ['cache_aware TTFT p50 1.05× of the best (approx_tree), p99 1.00× of the best (cache_aware), imbalance 1.2 (goal: within 5% of the best on both, imbalance < 1.5): met']);
  const mixed = costGoals(report('mooncake', { least_load: stats(500, 2000), cache_aware: stats(400, 2100) }, { speed_factors: [2, 1] }));
  assert.deepEqual(mixed, ['mixed fleet: cache_aware TTFT p50/p99 400/2100 ms vs least_load 500/2000 ms (goal: lower on both, no per-worker setting): not met']);
});

test('a run variant reaches the router and speed factors reach the workers: a ttft-cost router with a fast and a slow sim', async () => {
  const fleet = await startFleet({
    workers: 2,
    routers: 1,
    policy: 'cache_aware:ttft',
    worker: { blockSize: 16, numBlocks: 1024, prefillTokensPerS: 40_000, decodeStepMs: 5, maxBatch: 16, maxNumBatchedTokens: 2048, maxWaiting: 256, speedFactors: [4, 1] },
    startTimeoutMs: 90_000,
  });
  try {
    const prompt = Array.from({ length: 64 }, (_, i) => 100 + i);
    const route = await fetch(`${fleet.routerUrls[0]}/route`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 1 }) });
    const j = (await route.json()) as { policy: string; candidates: { terms: Record<string, number> }[] };
    assert.equal(j.policy, 'cache_aware');
    assert.ok(j.candidates.every((c) => typeof c.terms.predicted_ttft_ms === 'number'), JSON.stringify(j.candidates));
    // The same work takes 4× less on w0 than on w1 (a long decode, so the sim's step time dominates).
    const time = async (url: string) => {
      const t0 = performance.now();
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 100, ignore_eos: true }) });
      assert.equal(r.status, 200, await r.clone().text());
      await r.arrayBuffer();
      return performance.now() - t0;
    };
    const fast = await time(fleet.workerUrls[0]!);
    const slow = await time(fleet.workerUrls[1]!);
    // 100 decode steps of 5 ms: the slow one sleeps ≥ 500 ms; the fast one about 125 (a wide margin for a loaded machine).
    assert.ok(slow >= 500, `slow worker took ${slow} ms`);
    assert.ok(fast < slow * 0.75, `fast ${fast} ms vs slow ${slow} ms`);
  } finally {
    await fleet.stop();
  }
  assert.equal(liveChildren(), 0);
});

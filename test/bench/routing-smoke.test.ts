/**
 * Smoke run of the routing benchmark (bench/routing): the whole harness end to end on a tiny
 * system-prompt workload (a few dozen requests, 2 sim workers, round_robin vs cache_aware), so
 * that it cannot rot. Checks the JSON shape, that nothing failed, that cache_aware's hit rate is
 * at least round_robin's (groups sharing a system prompt: it must be), and that no child survives.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { liveChildren } from '../../bench/routing/fleet.js';
import { DEFAULTS, runBenchmark } from '../../bench/routing/main.js';
import { combineRepeats, runStats } from '../../bench/routing/stats.js';
import { upperBound } from '../../bench/routing/upper-bound.js';
import { mooncakeWorkload, parseSlice, readMooncake, systemPromptWorkload } from '../../bench/routing/workloads.js';

const out = mkdtempSync(join(tmpdir(), 'kvbench-smoke-'));
after(() => rmSync(out, { recursive: true, force: true }));

test('the Mooncake fixture replays with exact prefix sharing, and the upper bound counts it', () => {
  const recs = readMooncake(new URL('../fixtures/mooncake/conversation-slice.jsonl', import.meta.url).pathname, parseSlice('0:20'));
  assert.equal(recs.length, 20);
  const wl = mooncakeWorkload(recs, { outputScale: 0.1, maxOutput: 64 }, {});
  const a = wl.requests[0]!.prompt();
  const b = wl.requests[1]!.prompt();
  assert.equal(a.length, recs[0]!.input_length);
  // Both start with hash id 0: the first 512 tokens are equal, the next block differs.
  assert.deepEqual(a.slice(0, 512), b.slice(0, 512));
  assert.notDeepEqual(a.slice(512, 1024), b.slice(512, 1024));
  const ub = upperBound(wl.requests, 16);
  assert.ok(ub.hitRate > 0 && ub.hitRate < 1);
  // Every request after the first finds at least the shared 512-token block.
  assert.ok(ub.perRequest.slice(1).every((c) => c >= 512));
  const sys = systemPromptWorkload({ requests: 10, rate: 1, maxTokens: 4, seed: 1, groups: 1, systemTokens: 64, userTokens: 16 });
  assert.equal(upperBound(sys.requests, 16).perRequest[0], 0);
  assert.equal(upperBound(sys.requests, 16).perRequest[9], 64);
});

test('routing benchmark smoke run: 2 workers, round_robin vs cache_aware, system-prompt groups', { timeout: 90_000 }, async () => {
  const t0 = Date.now();
  const res = await runBenchmark({
    ...DEFAULTS,
    workload: 'system-prompt',
    requests: 36,
    rate: 12,
    speed: 1,
    workers: 2,
    policies: ['round_robin', 'cache_aware'],
    replicas: [1],
    maxOutput: 8,
    // A few groups, so that shared system prompts dominate.
    groups: 4,
    numBlocks: 2048,
    prefillTokensPerS: 40_000,
    timeoutMs: 20_000,
    out,
    quiet: true,
    command: 'routing-smoke.test.ts',
  });
  const j = JSON.parse(readFileSync(join(out, 'system-prompt.json'), 'utf8')) as {
    upper_bound_hit_rate: number;
    policies: Record<string, Record<string, unknown>>;
    fleet: Record<string, unknown>;
  };
  assert.equal(typeof j.upper_bound_hit_rate, 'number');
  assert.ok(j.upper_bound_hit_rate > 0.5, `upper bound ${j.upper_bound_hit_rate}`);
  assert.deepEqual(Object.keys(j.policies).sort(), ['cache_aware', 'round_robin']);
  const fields = ['hit_rate', 'ttft_p50_ms', 'ttft_p90_ms', 'ttft_p99_ms', 'e2e_p50_ms', 'e2e_p99_ms', 'throughput_rps', 'imbalance', 'failed', 'replicas'];
  for (const [name, p] of Object.entries(j.policies)) {
    for (const f of fields) assert.equal(typeof p[f], 'number', `${name}.${f}`);
    assert.equal(p.failed, 0, `${name} failed requests: ${JSON.stringify(p.errors)}`);
    assert.equal(p.replicas, 1);
    assert.ok((p.hit_rate as number) <= j.upper_bound_hit_rate + 1e-9, `${name} beats the upper bound`);
    assert.ok((p.ttft_p50_ms as number) > 0 && (p.ttft_p99_ms as number) >= (p.ttft_p50_ms as number));
  }
  const ca = j.policies.cache_aware!.hit_rate as number;
  const rr = j.policies.round_robin!.hit_rate as number;
  assert.ok(ca >= rr, `cache_aware hit rate ${ca} < round_robin ${rr}`);
  for (const f of ['system-prompt.md', 'system-prompt-ttft-cdf.svg', 'system-prompt-worker-load.svg']) assert.ok(existsSync(join(out, f)), f);
  assert.match(readFileSync(join(out, 'system-prompt-ttft-cdf.svg'), 'utf8'), /^<svg[\s\S]*<\/svg>$/);
  assert.equal(res.runs.length, 2);
  assert.equal(liveChildren(), 0, 'child processes left running');
  assert.ok(Date.now() - t0 < 90_000);
});

test('repeats combine into medians with their min–max, failures summed, per-worker figures from the median repeat', () => {
  const base = runStats('cache_aware', 1, ['w0'], [], 0, 0);
  const run = (hit: number, p99: number, failed: number, tag: number) => ({ ...base, hit_rate: hit, ttft_p99_ms: p99, failed, requests: 10, per_worker: { w0: { requests: tag, prefill_tokens: 0, cached_tokens: 0, prompt_tokens: 0 } } });
  const c = combineRepeats([run(0.16, 3000, 0, 1), run(0.12, 2000, 1, 2), run(0.15, 5000, 2, 3)]);
  assert.equal(c.repeats, 3);
  assert.equal(c.hit_rate, 0.15);
  assert.deepEqual(c.spread.hit_rate, [0.12, 0.16]);
  assert.equal(c.ttft_p99_ms, 3000);
  assert.deepEqual(c.spread.ttft_p99_ms, [2000, 5000]);
  assert.equal(c.failed, 3);
  assert.equal(c.requests, 30);
  assert.equal(c.per_worker.w0!.requests, 3, 'the repeat whose hit rate is the median');
  assert.deepEqual(c.per_repeat.map((r) => r.ttft_p99_ms), [3000, 2000, 5000]);
});

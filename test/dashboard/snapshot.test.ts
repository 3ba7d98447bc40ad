import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildSnapshot, SERIES_POINTS, type SnapshotInput, type WorkerInput } from '../../router/dashboard/snapshot.js';
import { quantileBetween } from '../../router/dashboard/metric-values.js';
import { trustReason } from '../../router/dashboard/trust.js';
import { RecentDecisions, type DecisionRecord } from '../../router/observe/recent-decisions.js';
import type { StreamHealth } from '../../router/streams.js';

const stream = (over: Partial<StreamHealth> = {}): StreamHealth => ({
  trusted: true, connected: true, lastSeq: '3', batches: 3, gaps: 1, replays: 2, resets: 0, historyMissing: 0, malformed: 0,
  duplicates: 0, probes: 0, probeFinds: 0, lagMs: 4, treeClears: 0, routedWithoutEvents: 0, silentWarnings: 0, silent: null, snapshots: 0, snapshotFallbacks: 0, trustLosses: 0, ...over,
});

const worker = (id: string, state: string, over: Partial<WorkerInput['ranks'][number]> = {}): WorkerInput => ({
  id, url: `http://127.0.0.1/${id}`, state, draining: false, last_error: null, prediction_warning: null,
  ranks: [{ rank: 0, source: `${id}:0`, stream: stream(), blocks: 10, blocks_by_tier: { GPU: 10 }, provisional_blocks: 1, capacity_blocks: 40, in_flight: 2, queued_prefill_tokens: 64, ...over }],
});

const counter = (values: Record<string, number>) => Object.entries(values).map(([worker, value]) => ({ labels: { worker, outcome: 'ok' }, value }));
const histogram = (counts: Record<string, number>) =>
  Object.entries(counts).map(([le, value]) => ({ labels: { worker: 'a', le }, value, metricName: 'kv_router_ttfb_seconds_bucket' }));

function input(at: number, requests: Record<string, number>, extra: Partial<SnapshotInput> = {}): SnapshotInput {
  return {
    now_ms: at,
    policy: 'cache_aware',
    workers: [worker('a', 'healthy'), worker('b', 'unhealthy', { stream: null, capacity_blocks: null })],
    metrics: { requests: counter(requests), ttfb: null, prompt_tokens: counter({ a: 1000 }), predicted_cached: counter({ a: 600 }), actual_cached: null, accuracy: null },
    decisions: [],
    hot_prefixes: [],
    ...extra,
  };
}

test('fleet rows carry state, trust with its reason, blocks, fill and load; absent metrics are null', () => {
  const { snapshot } = buildSnapshot(input(1000, { a: 5 }), null);
  assert.equal(snapshot.fleet.length, 2);
  const [a, b] = snapshot.fleet;
  assert.deepEqual([a!.worker, a!.state, a!.in_rotation, a!.trusted, a!.trust_reason], ['a', 'healthy', true, true, 'in sync']);
  assert.equal(a!.cache_fill, 0.25);
  assert.deepEqual([a!.in_flight, a!.queued_prefill_tokens, a!.gaps, a!.replays, a!.lag_ms], [2, 64, 1, 2, 4]);
  assert.equal(a!.predicted_hit_rate, 0.6);
  assert.equal(a!.actual_hit_rate, null, 'no actual counter exported: unknown, not zero');
  assert.equal(a!.requests_per_s, null, 'first snapshot: no rate yet');
  assert.deepEqual([b!.state, b!.in_rotation, b!.trusted, b!.cache_fill, b!.gaps], ['unhealthy', false, null, null, null]);
  assert.match(b!.trust_reason, /no event stream/);
  assert.equal(snapshot.present.actual_cached, false);
  assert.equal(snapshot.present.predicted_cached, true);
});

test('rates are the counters\' increase between two snapshots; the series grows and stays bounded', () => {
  let { state } = buildSnapshot(input(1000, { a: 5, b: 1 }), null);
  const second = buildSnapshot(input(3000, { a: 9, b: 3 }), state);
  assert.equal(second.snapshot.fleet[0]!.requests_per_s, 2);
  assert.equal(second.snapshot.fleet[1]!.requests_per_s, 1);
  assert.equal(second.snapshot.totals.requests_per_s, 3);
  assert.deepEqual(second.snapshot.series.requests_per_s, [null, 3]);
  assert.deepEqual(second.snapshot.series.load, { a: [2, 2], b: [2, 2] });
  state = second.state;
  for (let i = 0; i < SERIES_POINTS + 5; i++) state = buildSnapshot(input(4000 + i * 1000, { a: 9, b: 3 }), state).state;
  assert.equal(state.series.t.length, SERIES_POINTS);
});

test('TTFB quantiles come from the histogram buckets observed in the interval', () => {
  const first = buildSnapshot({ ...input(0, {}), metrics: { ...input(0, {}).metrics, ttfb: histogram({ '0.1': 10, '0.5': 10, '+Inf': 10 }) } }, null);
  const next = buildSnapshot({ ...input(1000, {}), metrics: { ...input(1000, {}).metrics, ttfb: histogram({ '0.1': 10, '0.5': 20, '+Inf': 20 }) } }, first.state);
  // The 10 new observations all fell in (0.1, 0.5]: p50 interpolates to 0.3 s.
  assert.ok(Math.abs(next.snapshot.series.ttfb_p50_ms.at(-1)! - 300) < 1e-6);
  assert.equal(quantileBetween({}, { '1': 0, '+Inf': 0 }, 0.5), null);
});

test('decisions are copied field by field (newest first) and hot prefixes show a hash and a length, never tokens', () => {
  const ring = new RecentDecisions(5);
  for (let i = 0; i < 7; i++) {
    const r = {
      request_id: `r${i}`, at_ms: i, policy: 'cache_aware', prompt_tokens: 100 + i,
      candidates: [{ worker: 'a', rank: 0, matched_tokens: 64, in_flight: 0, queued_prefill_tokens: 0, cost: 36, terms: { prefill: 36 } }],
      pick: { worker: 'a', rank: 0, predicted_cached_tokens: 64 }, outcome: 'ok', actual_cached_tokens: 48,
      prompt: 'secret text', token_ids: [1, 2, 3],
    } as DecisionRecord;
    ring.add(r);
  }
  const { snapshot } = buildSnapshot(input(0, {}, { decisions: ring.list(), hot_prefixes: [{ key: '128:abc12:def34', requests: 7, holders: ['a:0'] }] }), null);
  assert.deepEqual(snapshot.decisions.map((d) => d.request_id), ['r6', 'r5', 'r4', 'r3', 'r2']);
  const text = JSON.stringify(snapshot);
  assert.ok(!text.includes('secret text') && !text.includes('token_ids'));
  assert.deepEqual(snapshot.hot_prefixes, [{ hash: 'abc12def34', length: 128, requests: 7, holders: ['a:0'] }]);
});

test('an untrusted stream says why', () => {
  assert.equal(trustReason(stream({ trusted: false, connected: false })), 'not connected to the publisher');
  assert.equal(trustReason(stream({ trusted: false, batches: 0 })), 'no event batch received yet');
  assert.equal(trustReason(stream({ trusted: false, gaps: 2 })), 'resyncing after a gap or reset');
  assert.equal(trustReason(stream({ trusted: false, gaps: 0, resets: 0 })), 'waiting for the replay of missed batches');
  assert.equal(trustReason(stream({ silent: 'no batch in 10 s while 5 requests were routed' })), 'no batch in 10 s while 5 requests were routed');
});

test('a worker\'s prediction warning reaches its rows and the terminal table', async () => {
  const { formatStatus } = await import('../../router/status-table.js');
  const w = { ...worker('a', 'healthy'), prediction_warning: 'actual hits 10% of predicted: different tokenizer or chat template?' };
  const { snapshot } = buildSnapshot({ ...input(0, {}), workers: [w] }, null);
  assert.equal(snapshot.fleet[0]!.prediction_warning, w.prediction_warning);
  assert.match(formatStatus(snapshot), /^a:0: prediction: actual hits 10% of predicted/m);
});

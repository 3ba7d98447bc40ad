/**
 * The routing benchmark's shared-load parts (issue 13): run specs (`policy@N`, `policy@N/local`),
 * the plan, the burst's prefix-worker count, the replica-consistent tie break, and, through a real
 * nats-server with 2 real routers and 2 sim workers, the bench's NATS traffic counter and its
 * decision → effect probes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { messageKind, perRequest, probePropagation, watchCluster } from '../../bench/routing/cluster.js';
import { replay } from '../../bench/routing/client.js';
import { findNatsServer, liveChildren, startFleet } from '../../bench/routing/fleet.js';
import { DEFAULTS, parseOptions, parseRunSpec, planRuns } from '../../bench/routing/main.js';
import { runKey } from '../../bench/routing/report.js';
import { burstWorkload, prefixWorkers, systemPromptWorkload } from '../../bench/routing/workloads.js';
import { tieRank } from '../../router/cluster/tie-break.js';

test('run specs: policy, policy@N (shared load), policy@N/local; bad ones are refused with the accepted forms', () => {
  assert.deepEqual(parseRunSpec('cache_aware'), { policy: 'cache_aware', replicas: 1, shared: null });
  assert.deepEqual(parseRunSpec('cache_aware@4'), { policy: 'cache_aware', replicas: 4, shared: true });
  assert.deepEqual(parseRunSpec('cache_aware@4/local'), { policy: 'cache_aware', replicas: 4, shared: false });
  assert.throws(() => parseRunSpec('cache_aware@x'), /POLICY@N\/local/);
  assert.throws(() => parseOptions(['--policies', 'nope@4']), /unknown policy "nope"/);
  assert.throws(() => parseOptions(['--shared-load', 'maybe']), /both, on or off/);
  const o = parseOptions(['--policies', 'cache_aware,cache_aware@4,cache_aware@4/local']);
  assert.ok(o !== 'help');
  assert.deepEqual(planRuns(o).map((r) => runKey(r.policy, r.replicas, r.shared)), ['cache_aware', 'cache_aware@4', 'cache_aware@4/local']);
  // The default plan: every replica count of a replica policy with and without shared load.
  const keys = planRuns(DEFAULTS).map((r) => runKey(r.policy, r.replicas, r.shared));
  assert.ok(keys.includes('cache_aware@4') && keys.includes('cache_aware@4/local') && keys.includes('cache_aware'), keys.join(','));
  assert.deepEqual(planRuns({ ...DEFAULTS, sharedLoad: 'off' }).filter((r) => r.replicas > 1).map((r) => r.shared), [false, false, false, false]);
});

test('burst: every request at once, one shared prefix; prefix workers are those that served it short of the prefix', () => {
  const wl = burstWorkload({ requests: 8, rate: 1, maxTokens: 4, seed: 3, sharedTokens: 64, tailTokens: 16 });
  assert.ok(wl.requests.every((r) => r.at === 0 && r.prompt().length === 80));
  assert.deepEqual(wl.requests[0]!.prompt().slice(0, 64), wl.requests[7]!.prompt().slice(0, 64));
  assert.notDeepEqual(wl.requests[0]!.prompt().slice(64), wl.requests[7]!.prompt().slice(64));
  const r = (worker: string, cachedTokens: number, ok = true) => ({ ok, worker, cachedTokens });
  assert.deepEqual(prefixWorkers([r('w1', 0), r('w1', 64), r('w0', 48), r('w2', 64), r('w3', 0, false)], 64, 16), ['w0', 'w1']);
});

test('tie break: the same prompt head and worker give the same rank; heads spread over workers', () => {
  const head = systemPromptWorkload({ requests: 1, rate: 1, maxTokens: 1, seed: 1, groups: 1, systemTokens: 128, userTokens: 1 }).requests[0]!.prompt();
  assert.equal(tieRank(head, 'w0:0'), tieRank([...head], 'w0:0'));
  const firsts = new Map<string, number>();
  for (let p = 0; p < 200; p++) {
    const tokens = Array.from({ length: 64 }, (_, i) => p * 1000 + i);
    const best = ['a:0', 'b:0', 'c:0', 'd:0'].sort((x, y) => tieRank(tokens, x) - tieRank(tokens, y))[0]!;
    firsts.set(best, (firsts.get(best) ?? 0) + 1);
  }
  assert.equal(firsts.size, 4, JSON.stringify([...firsts]));
  for (const n of firsts.values()) assert.ok(n > 20, JSON.stringify([...firsts]));
});

test('message kinds from subject and the load message k field', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(messageKind('kv.prov.r1', 'kv', enc('{}')), 'provisional');
  assert.equal(messageKind('kv.load.r1', 'kv', enc('{"r":"r1","q":1,"ttl":3000,"k":"d","s":{}}')), 'delta');
  assert.equal(messageKind('kv.load.r1', 'kv', enc('{"r":"r1","q":2,"ttl":3000,"k":"h","s":{}}')), 'heartbeat');
  assert.equal(messageKind('kv.load.r1', 'kv', enc('{"r":"r1","q":3,"ttl":3000,"k":"b"}')), 'goodbye');
  assert.equal(messageKind('other.x', 'kv', enc('{}')), 'other');
});

test('shared-load fleet: the bench counts the routers\' NATS traffic and sees a decision on one replica reach the other', { skip: findNatsServer() ? false : 'nats-server not installed', timeout: 120_000 }, async () => {
  const fleet = await startFleet({ workers: 2, routers: 2, policy: 'cache_aware', sharedLoad: true, worker: { blockSize: 16, numBlocks: 1024, prefillTokensPerS: 40_000, decodeStepMs: 5, maxBatch: 16, maxNumBatchedTokens: 2048, maxWaiting: 256 }, startTimeoutMs: 90_000 });
  let watch: Awaited<ReturnType<typeof watchCluster>> | null = null;
  try {
    assert.match(fleet.natsUrl ?? '', /^nats:\/\/127\.0\.0\.1:\d+$/);
    watch = await watchCluster(fleet.natsUrl!, fleet.subjectPrefix);
    const wl = systemPromptWorkload({ requests: 12, rate: 50, maxTokens: 4, seed: 5, groups: 2, systemTokens: 256, userTokens: 32 });
    const rep = await replay(wl.requests, { routerUrls: fleet.routerUrls, speed: 1, timeoutMs: 30_000 });
    assert.deepEqual(rep.results.filter((r) => !r.ok).map((r) => r.error), []);
    const t = watch.snapshot();
    // Every routed request is one provisional message from the replica that routed it, and changes load.
    assert.ok(t.by_kind.provisional.messages >= 12, JSON.stringify(t));
    assert.ok(t.by_kind.delta.messages >= 1, JSON.stringify(t));
    const per = perRequest(t, 12, 2);
    assert.ok(per.bytes_per_request > 0 && per.delivered_bytes_per_request === Math.round((t.bytes * 2) / 12));
    const q = await probePropagation(fleet.routerUrls, { probes: 3, promptTokens: 256, maxTokens: 8, boundMs: 20_000, watch });
    assert.equal(q.provisional_missed + q.load_missed, 0, JSON.stringify(q));
    assert.ok(q.provisional_p50_ms >= 0 && q.load_p50_ms >= 0);
    assert.ok(typeof q.nats_p50_ms === 'number' && q.nats_p50_ms >= 0 && q.nats_p99_ms! >= q.nats_p50_ms, JSON.stringify(q));
  } finally {
    await watch?.close();
    await fleet.stop();
  }
  assert.equal(liveChildren(), 0);
});

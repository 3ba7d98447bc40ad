/**
 * The sibling burst of issue 13 through real parts: a real nats-server on a free loopback port, 4
 * real `kv-worker --engine sim` processes, 4 real `kv-router` replicas sharing load over NATS
 * (then one router alone). 64 simultaneous requests share one new 4k-token prefix (distinct
 * tails), round robin over the replicas; the workers' own usage (cached_tokens) says on which
 * workers the prefix was computed: at most 2, with the default config (weighted cost, hot-spot
 * guard on: it spares a holder while that holder is still computing the prefix; the replicas'
 * load messages say which blocks their pending prefills compute). (The control with the cluster
 * off, `npm run bench:routing -- --workload burst`'s cache_aware@4/local, is left to the
 * benchmark, keeping this file fast.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { replay } from '../../bench/routing/client.js';
import { findNatsServer, liveChildren, startFleet, type Fleet } from '../../bench/routing/fleet.js';
import { burstWorkload, prefixWorkers } from '../../bench/routing/workloads.js';

const natsBin = findNatsServer();
if (!natsBin) process.stderr.write('\n*** cluster-burst.test.ts SKIPPED: nats-server is not installed (apt-get install nats-server; .ci/run installs it) ***\n\n');

const BLOCK = 16;
const PREFIX = 4096;
const worker = { blockSize: BLOCK, numBlocks: 2048, prefillTokensPerS: 40_000, decodeStepMs: 5, maxBatch: 64, maxNumBatchedTokens: 2048, maxWaiting: 4096 };

async function burst(routers: number, sharedLoad: boolean, seed: number): Promise<{ workers: string[]; failed: string[] }> {
  let fleet: Fleet | null = null;
  try {
    fleet = await startFleet({ workers: 4, routers, policy: 'cache_aware', worker, sharedLoad, startTimeoutMs: 90_000 });
    const wl = burstWorkload({ requests: 64, rate: 1, maxTokens: 4, seed, sharedTokens: PREFIX, tailTokens: 64 });
    const rep = await replay(wl.requests, { routerUrls: fleet.routerUrls, speed: 1, timeoutMs: 60_000 });
    return { workers: prefixWorkers(rep.results, PREFIX, BLOCK), failed: rep.results.filter((r) => !r.ok).map((r) => r.error ?? '?') };
  } finally {
    await fleet?.stop();
  }
}

test('a burst of 64 siblings over 4 replicas sharing load computes its new prefix on at most 2 workers (default config)', { skip: natsBin ? false : 'nats-server not installed', timeout: 150_000 }, async () => {
  const shared = await burst(4, true, 1);
  assert.deepEqual(shared.failed, []);
  assert.ok(shared.workers.length >= 1, 'some worker computed the prefix');
  assert.ok(shared.workers.length <= 2, `prefix computed on ${shared.workers.length} workers: ${shared.workers.join(', ')}`);
  assert.equal(liveChildren(), 0, 'child processes left running');
});

test('the same burst on one router computes its prefix on at most 2 workers (default config: the hot-spot guard spares the holder computing it)', { timeout: 150_000 }, async () => {
  const one = await burst(1, false, 2);
  assert.deepEqual(one.failed, []);
  assert.ok(one.workers.length >= 1 && one.workers.length <= 2, `prefix computed on ${one.workers.length} workers: ${one.workers.join(', ')}`);
  assert.equal(liveChildren(), 0, 'child processes left running');
});

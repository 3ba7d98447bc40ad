// Cache tiers in the cost: a hit held in CPU or disk memory costs its load time, a GPU hit is free.
// On a real PrefixIndex fed with BlockStored batches carrying `medium`, as vLLM's offloading sends them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { CacheAwarePolicy } from '../../router/policies/cache-aware.js';
import type { Candidate, RouteRequest } from '../../router/policies/policy.js';
import { LocalLoad } from '../../router/load.js';
import { RouterConfigSchema } from '../../router/config.js';
import { DEFAULT_TIER_TOKENS_PER_S, ratesFor, tierLoadMs } from '../../router/cost/tiers.js';

const BS = 16;
let nextHash = 1n;
function stored(tokens: number[], medium: string): KVEventBatch {
  const blocks = Math.floor(tokens.length / BS);
  const hashes = Array.from({ length: blocks }, () => nextHash++);
  return { ts: 0, dp_rank: 0, events: [{ type: 'BlockStored', block_hashes: hashes, parent_block_hash: null, token_ids: tokens.slice(0, blocks * BS), block_size: BS, lora_id: null, medium, lora_name: null }] };
}
const seq = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);
const load = new LocalLoad();
const cand = (id: string, tierRates?: Record<string, number>): Candidate => ({ workerId: id, rank: 0, source: `${id}:0`, trusted: true, blockSize: BS, tokenizerKey: 'default', load: load.get(`${id}:0`), ...(tierRates ? { tierRates } : {}) });
const req = (tokens: number[]): RouteRequest => ({ tokensFor: () => tokens, lora: null, salt: null });

function fleet() {
  const index = new PrefixIndex();
  for (const s of ['gpu:0', 'cpu:0', 'disk:0', 'none:0']) index.addSource(s);
  const prefix = seq(4096, 1000);
  index.applyBatch('gpu:0', stored(prefix, 'GPU'));
  index.applyBatch('cpu:0', stored(prefix, 'CPU'));
  index.applyBatch('disk:0', stored(prefix, 'DISK'));
  return { index, prompt: [...prefix, ...seq(64, 9)] };
}

test('tierLoadMs: tokens / rate per tier; GPU and provisional are free; unknown media as slow as DISK; overrides win', () => {
  assert.deepEqual(tierLoadMs({ GPU: 4096, provisional: 32 }, DEFAULT_TIER_TOKENS_PER_S), { total: 0, byTier: {} });
  const cpu = tierLoadMs({ CPU: 19_000 }, DEFAULT_TIER_TOKENS_PER_S);
  assert.equal(cpu.total, 100);
  assert.equal(tierLoadMs({ lmcache_remote: 38_000 }, DEFAULT_TIER_TOKENS_PER_S).total, 1000);
  assert.equal(tierLoadMs({ cpu: 19_000 }, ratesFor({ CPU: 19_000 }, undefined)).total, 1000, 'medium names are case-insensitive');
  assert.equal(tierLoadMs({ CPU: 19_000 }, ratesFor({ CPU: 19_000 }, { CPU: 190 })).total, 100_000, "a worker's override wins over the fleet's");
});

for (const cost of ['weighted', 'ttft'] as const) {
  test(`${cost} cost: a GPU hit beats a CPU hit beats a disk hit beats recomputing; /route terms show the tier load`, () => {
    const { index, prompt } = fleet();
    const settings = RouterConfigSchema.parse({ cache_aware: { cost } }).cache_aware;
    const p = new CacheAwarePolicy(index, settings);
    const ranked = p.rank(req(prompt), [cand('none'), cand('disk'), cand('cpu'), cand('gpu')]);
    assert.deepEqual(ranked.map((s) => s.candidate.workerId), ['gpu', 'cpu', 'disk', 'none']);
    const by = Object.fromEntries(ranked.map((s) => [s.candidate.workerId, s]));
    assert.deepEqual(by.cpu!.byMedium, { CPU: 4096 });
    assert.equal(by.cpu!.matchedTokens, 4096, 'a tier hit is still a hit: it is not recomputed');
    const key = cost === 'ttft' ? 'tier_load_ms' : 'tier_load';
    assert.equal(by.gpu!.terms[key], undefined);
    assert.ok(by.cpu!.terms[key]! > 0 && by.disk!.terms[key]! > by.cpu!.terms[key]!, JSON.stringify(by.cpu!.terms));
    if (cost === 'ttft') assert.equal(by.cpu!.terms.tier_load_ms, Math.round((4096 / 190_000) * 1000 * 100) / 100);
  });
}

test('a worker whose CPU tier is configured slower than recomputing loses to a cold worker', () => {
  const { index, prompt } = fleet();
  const settings = RouterConfigSchema.parse({ cache_aware: { cost: 'ttft' } }).cache_aware;
  const p = new CacheAwarePolicy(index, settings);
  const ranked = p.rank(req(prompt), [cand('cpu', { CPU: 100 }), cand('none')]);
  assert.equal(ranked[0]!.candidate.workerId, 'none', JSON.stringify(ranked.map((s) => [s.candidate.workerId, s.cost])));
});

test('config: tiers are tokens/s by medium; a bad rate is a config error', () => {
  const c = RouterConfigSchema.parse({ cache_aware: { tiers: { CPU: 400_000 } }, workers: [{ id: 'a', url: 'http://127.0.0.1:1', tiers: { DISK: 1000 } }] });
  assert.deepEqual(c.cache_aware.tiers, { CPU: 400_000 });
  assert.deepEqual(c.workers[0]!.tiers, { DISK: 1000 });
  assert.throws(() => RouterConfigSchema.parse({ cache_aware: { tiers: { CPU: 0 } } }));
  assert.throws(() => RouterConfigSchema.parse({ cache_aware: { tiers: { CPU: 'fast' } } }));
});

// Routing policies alone, on a real PrefixIndex fed with event batches: no sockets, no HTTP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { CacheAwarePolicy } from '../../router/policies/cache-aware.js';
import { RoundRobinPolicy } from '../../router/policies/round-robin.js';
import { RandomPolicy } from '../../router/policies/random.js';
import { LeastLoadPolicy } from '../../router/policies/least-load.js';
import { ApproxTreePolicy } from '../../router/policies/approx-tree.js';
import { PowerOfTwoPolicy } from '../../router/policies/power-of-two.js';
import { PrefixHashPolicy } from '../../router/policies/prefix-hash.js';
import type { Candidate, CostWeights, RouteRequest } from '../../router/policies/policy.js';
import { sortByCost } from '../../router/policies/policy.js';
import { LocalLoad } from '../../router/load.js';
import { RouterConfigSchema } from '../../router/config.js';
import { HotPrefixes, prefixKey } from '../../router/policies/hot-prefixes.js';
import { rng } from '../../bench/routing/workloads.js';

const BS = 16;
const W: CostWeights = { prefill_weight: 1, queued_prefill_weight: 1, decode_weight: 32, tie_tolerance: 0 };

function seq(n: number, base: number): number[] {
  return Array.from({ length: n }, (_, i) => base + i);
}

let nextHash = 1n;
/** A batch storing `tokens` (full blocks) as one chain from the root. */
function storeBatch(tokens: number[]): KVEventBatch {
  const blocks = Math.floor(tokens.length / BS);
  const hashes = Array.from({ length: blocks }, () => (nextHash++) + (1n << 63n));
  return {
    ts: Date.now() / 1000,
    dp_rank: 0,
    events: [{ type: 'BlockStored', block_hashes: hashes, parent_block_hash: null, token_ids: tokens.slice(0, blocks * BS), block_size: BS, lora_id: null, medium: 'GPU', lora_name: null }],
  };
}

/** A real index with the sources these tests use (the index never creates one implicitly). */
function indexOf(opts?: ConstructorParameters<typeof PrefixIndex>[0]): PrefixIndex {
  const index = new PrefixIndex(opts);
  for (const w of ['a', 'b', 'c', 'd', 'w']) index.addSource(`${w}:0`);
  return index;
}

function cand(workerId: string, load = new LocalLoad(), trusted = true): Candidate {
  const source = `${workerId}:0`;
  return { workerId, rank: 0, source, trusted, blockSize: BS, tokenizerKey: 'default', load: load.get(source) };
}

const req = (tokens: number[], salt: string | null = null): RouteRequest => ({ tokensFor: () => tokens, lora: null, salt });

test('cache_aware: the worker holding the long prefix wins, cost terms explain why', () => {
  const index = indexOf({ provisionalTtlMs: 1000 });
  const prefix = seq(1024, 1000);
  index.applyBatch('a:0', storeBatch(prefix));
  index.applyBatch('b:0', storeBatch(seq(512, 90000)));
  const p = new CacheAwarePolicy(index, W);
  const prompt = [...prefix, ...seq(40, 5)];
  const ranked = p.rank(req(prompt), [cand('b'), cand('a')]);
  assert.equal(ranked[0]!.candidate.workerId, 'a');
  assert.equal(ranked[0]!.matchedTokens, 1024);
  assert.equal(ranked[0]!.terms.prefill, prompt.length - 1024);
  assert.equal(ranked[1]!.matchedTokens, 0);
  assert.equal(ranked[1]!.cost, prompt.length);
});

test('cache_aware: an untrusted stream counts as zero cached tokens', () => {
  const index = indexOf();
  const prefix = seq(1024, 1000);
  index.applyBatch('a:0', storeBatch(prefix));
  const p = new CacheAwarePolicy(index, W, () => 0.5);
  const ranked = p.rank(req([...prefix, 5]), [cand('a', undefined, false), cand('b')]);
  const a = ranked.find((s) => s.candidate.workerId === 'a')!;
  assert.equal(a.indexMatchedTokens, 1024);
  assert.equal(a.matchedTokens, 0);
  assert.equal(a.cost, 1025);
});

test('cache_aware: a busy worker stops attracting requests even when it holds the prefix', () => {
  const index = indexOf();
  const prefix = seq(2048, 1000);
  index.applyBatch('a:0', storeBatch(prefix));
  const load = new LocalLoad();
  const p = new CacheAwarePolicy(index, W);
  const prompt = [...prefix, ...seq(64, 1)];
  assert.equal(p.rank(req(prompt), [cand('a', load), cand('b', load)])[0]!.candidate.workerId, 'a');
  // Queue 3000 prefill tokens on a: now b (2112 to compute, idle) is cheaper than a (64 + 3000 + decode).
  load.start('a:0', 3000);
  const ranked = p.rank(req(prompt), [cand('a', load), cand('b', load)]);
  assert.equal(ranked[0]!.candidate.workerId, 'b');
  assert.equal(ranked[1]!.terms.queued_prefill, 3000);
  assert.equal(ranked[1]!.terms.decode, 32);
});

test('cache_aware: decode load alone also pushes requests away', () => {
  const index = indexOf();
  const prefix = seq(256, 1000);
  index.applyBatch('a:0', storeBatch(prefix));
  const load = new LocalLoad();
  for (let i = 0; i < 10; i++) load.start('a:0', 0).prefillDone(); // 10 decoding requests
  const p = new CacheAwarePolicy(index, W);
  const ranked = p.rank(req(prefix), [cand('a', load), cand('b', load)]);
  // a: 0 prefill + 320 decode > b: 256 prefill.
  assert.equal(ranked[0]!.candidate.workerId, 'b');
});

test('cache_aware: provisional marks keep a burst of siblings together, then expire', () => {
  let now = 1_000_000;
  const index = indexOf({ provisionalTtlMs: 2000, now: () => now });
  const p = new CacheAwarePolicy(index, W);
  const prefix = seq(1024, 7);
  const first = p.rank(req([...prefix, 1, 2, 3]), [cand('a'), cand('b'), cand('c')])[0]!.candidate;
  p.commit(req([...prefix, 1, 2, 3]), first);
  for (let i = 0; i < 20; i++) {
    const r = req([...prefix, ...seq(32, 100 * i)]);
    const pick = p.rank(r, [cand('a'), cand('b'), cand('c')])[0]!;
    assert.equal(pick.candidate.workerId, first.workerId);
    assert.equal(pick.matchedTokens, 1024);
    assert.equal(pick.byMedium?.provisional, 1024);
  }
  now += 2500;
  const after = p.rank(req(prefix), [cand('a'), cand('b'), cand('c')]);
  assert.ok(after.every((s) => s.matchedTokens === 0));
});

test('cache_aware: provisional marks count on a fresh (not yet trusted) stream, real blocks do not', () => {
  const index = indexOf();
  const p = new CacheAwarePolicy(index, W);
  const prefix = seq(512, 7);
  p.commit(req(prefix), cand('a', undefined, false));
  const a = p.rank(req([...prefix, 9]), [cand('a', undefined, false), cand('b')]).find((s) => s.candidate.workerId === 'a')!;
  assert.equal(a.matchedTokens, 512);
});

test('cache_aware: ties spread load (fewest in flight first, then a hash of prompt head and worker: the same pick on every replica)', () => {
  const index = indexOf();
  const load = new LocalLoad();
  const p = new CacheAwarePolicy(index, { ...W, decode_weight: 0 });
  load.start('a:0', 0);
  const prompt = seq(100, 1);
  for (let i = 0; i < 10; i++) assert.equal(p.rank(req(prompt), [cand('a', load), cand('b', load)])[0]!.candidate.workerId, 'b');
  // Equal everything: one prompt always gets the same worker, whatever the candidates' order (another
  // replica, or a policy instance of its own, picks the same); different prompts cover both.
  const first = p.rank(req(prompt), [cand('c'), cand('d')])[0]!.candidate.workerId;
  const other = new CacheAwarePolicy(indexOf(), { ...W, decode_weight: 0 });
  for (let i = 0; i < 10; i++) assert.equal(other.rank(req(prompt), i % 2 ? [cand('c'), cand('d')] : [cand('d'), cand('c')])[0]!.candidate.workerId, first);
  const seen = new Set<string>();
  for (let i = 0; i < 50; i++) seen.add(p.rank(req(seq(100, 1000 * (i + 2))), [cand('c'), cand('d')])[0]!.candidate.workerId);
  assert.deepEqual([...seen].sort(), ['c', 'd']);
});

test('sortByCost: tolerance band groups near-equal costs', () => {
  const load = new LocalLoad();
  load.start('a:0', 0);
  const mk = (id: string, cost: number) => ({ candidate: cand(id, load), matchedTokens: 0, indexMatchedTokens: 0, promptTokens: 0, terms: {}, cost });
  const out = sortByCost([mk('a', 100), mk('b', 105), mk('c', 300)], 10, () => 0.5);
  assert.deepEqual(out.map((s) => s.candidate.workerId), ['b', 'a', 'c']);
});

test('round_robin: rotates over candidates in a stable order', () => {
  const p = new RoundRobinPolicy();
  const picks = Array.from({ length: 6 }, () => {
    const pick = p.rank(req([1]), [cand('b'), cand('a'), cand('c')])[0]!.candidate;
    p.commit(req([1]), pick);
    return pick.workerId;
  });
  assert.deepEqual(picks, ['a', 'b', 'c', 'a', 'b', 'c']);
  // Ranking alone does not advance the turn (/route is a dry run).
  assert.equal(p.rank(req([1]), [cand('a'), cand('b'), cand('c')])[0]!.candidate.workerId, 'a');
  assert.equal(p.rank(req([1]), [cand('a'), cand('b'), cand('c')])[0]!.candidate.workerId, 'a');
  assert.equal(p.rank(req([1]), [cand('a'), cand('b')]).length, 2);
});

test('random: uses every candidate, ranks them all', () => {
  const p = new RandomPolicy();
  const seen = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    const r = p.rank(req([1]), [cand('a'), cand('b'), cand('c')]);
    assert.equal(r.length, 3);
    seen.set(r[0]!.candidate.workerId, (seen.get(r[0]!.candidate.workerId) ?? 0) + 1);
  }
  for (const id of ['a', 'b', 'c']) assert.ok((seen.get(id) ?? 0) > 50, `${id} picked ${seen.get(id)}`);
});

test('least_load: ignores cache, follows queued prefill and in-flight requests', () => {
  const load = new LocalLoad();
  const p = new LeastLoadPolicy(W);
  const t = load.start('a:0', 500);
  assert.equal(p.rank(req(seq(100, 1)), [cand('a', load), cand('b', load)])[0]!.candidate.workerId, 'b');
  t.prefillDone();
  t.finish();
  load.start('b:0', 10);
  assert.equal(p.rank(req(seq(100, 1)), [cand('a', load), cand('b', load)])[0]!.candidate.workerId, 'a');
});

test('approx_tree: learns only from its own decisions', () => {
  const p = new ApproxTreePolicy(W, { max_blocks_per_worker: 1000, ttl_ms: 0, block_size: BS });
  const prefix = seq(640, 3);
  const first = p.rank(req(prefix), [cand('a'), cand('b')]);
  assert.ok(first.every((s) => s.matchedTokens === 0));
  p.commit(req([...prefix, 1, 2]), cand('b'));
  const r = p.rank(req([...prefix, ...seq(40, 9)]), [cand('a'), cand('b')]);
  assert.equal(r[0]!.candidate.workerId, 'b');
  assert.equal(r[0]!.matchedTokens, 640);
  assert.equal(p.size('b:0'), 40);
  p.forget('b:0');
  assert.equal(p.size('b:0'), 0);
});

test('approx_tree: bounded memory evicts leaves before their prefixes', () => {
  const p = new ApproxTreePolicy(W, { max_blocks_per_worker: 50, ttl_ms: 0, block_size: BS });
  const shared = seq(320, 3); // 20 blocks
  for (let i = 0; i < 10; i++) p.commit(req([...shared, ...seq(160, 10_000 * (i + 1))]), cand('a'));
  assert.ok(p.size('a:0') <= 50);
  assert.equal(p.rank(req([...shared, 1]), [cand('a')])[0]!.matchedTokens, 320);
});

test('LocalLoad: tickets are idempotent and balance out', () => {
  const l = new LocalLoad();
  const t1 = l.start('w:0', 100);
  const t2 = l.start('w:0', 50);
  assert.deepEqual(l.get('w:0'), { inFlight: 2, pendingPrefillTokens: 150, activeDecodes: 0 });
  t1.prefillDone();
  t1.prefillDone();
  assert.deepEqual(l.get('w:0'), { inFlight: 2, pendingPrefillTokens: 50, activeDecodes: 1 });
  t1.finish();
  t1.finish();
  t2.finish();
  t2.prefillDone();
  assert.deepEqual(l.get('w:0'), { inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 });
  l.report('w:0', { running: 5, waiting: 2, pendingPrefillTokens: 900 });
  assert.deepEqual(l.effective('w:0'), { inFlight: 7, pendingPrefillTokens: 900, activeDecodes: 5 });
});

test('cache_aware: queued prefill computing a provisional prefix is shared work, so siblings follow it', () => {
  const index = indexOf({ provisionalTtlMs: 5000 });
  const load = new LocalLoad();
  const p = new CacheAwarePolicy(index, W);
  const prefix = seq(1024, 50);
  const first = [...prefix, 1, 2, 3];
  const pick = p.rank(req(first), [cand('a', load), cand('b', load)])[0]!.candidate;
  p.commit(req(first), pick);
  load.start(pick.source, first.length); // its whole prefill is queued there
  for (let i = 0; i < 5; i++) {
    const sib = [...prefix, ...seq(16, 7000 + 100 * i)];
    const r = p.rank(req(sib), [cand('a', load), cand('b', load)]);
    assert.equal(r[0]!.candidate.workerId, pick.workerId);
    assert.equal(r[0]!.terms.queued_prefill, load.get(pick.source).pendingPrefillTokens - 1024);
    p.commit(req(sib), r[0]!.candidate);
    load.start(pick.source, 16);
  }
});

test('cache_aware (default weights): one prompt shared by everybody does not pile onto the worker holding it (hot-spot guard)', () => {
  const defaults = RouterConfigSchema.parse({}).cache_aware;
  const shared = seq(4096, 7000);
  /** 40 requests, each staying in flight (decoding: the pile-up case); the picked worker publishes the prompt's blocks, as a real one would. */
  const serve = (weights: CostWeights, base: number): Record<string, number> => {
    const index = indexOf();
    index.applyBatch('a:0', storeBatch(shared));
    const load = new LocalLoad();
    const cands = ['a', 'b', 'c', 'd'].map((id) => cand(id, load));
    const p = new CacheAwarePolicy(index, weights, () => 0.5);
    const counts: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const tokens = [...shared, ...seq(32, base + i * 32)];
      const r = req(tokens);
      const [best] = p.rank(r, cands.map((c) => ({ ...c, load: load.get(c.source) })));
      const pick = best!.candidate;
      p.commit(r, pick);
      load.start(pick.source, best!.promptTokens - best!.matchedTokens).prefillDone();
      index.applyBatch(pick.source, storeBatch(tokens));
      counts[pick.workerId] = (counts[pick.workerId] ?? 0) + 1;
    }
    return counts;
  };
  const guarded = serve(defaults, 100_000);
  const n = Object.values(guarded);
  assert.equal(n.length, 4, `every worker serves some: ${JSON.stringify(guarded)}`);
  assert.ok(Math.max(...n) / (40 / 4) <= 1.5, `imbalance ≤ 1.5: ${JSON.stringify(guarded)}`);
  // The same weights without the guard: the holder takes far more than its share.
  const unguarded = serve({ ...defaults, balance_abs_threshold: undefined, balance_rel_threshold: undefined }, 200_000);
  assert.ok((unguarded.a ?? 0) > 20, `unguarded holder took ${unguarded.a}/40: ${JSON.stringify(unguarded)}`);
});

test('cache_aware (default weights): a busy worker keeps a conversation whose prefix nobody else shares; a hot prefix moves off it', () => {
  const defaults = RouterConfigSchema.parse({}).cache_aware;
  const index = indexOf();
  const conversation = seq(8192, 300_000);
  index.applyBatch('a:0', storeBatch(conversation));
  const load = new LocalLoad();
  for (let i = 0; i < 12; i++) load.start('a:0', 0).prefillDone(); // 12 decoding on a, the others idle
  const cands = () => ['a', 'b', 'c', 'd'].map((id) => cand(id, load));
  const p = new CacheAwarePolicy(index, defaults, () => 0.5);
  // The next turn of the conversation: its 8k-token history is on a only, and only this request uses it.
  const turn = req([...conversation, ...seq(200, 400_000)]);
  const ranked = p.rank(turn, cands());
  assert.equal(ranked[0]!.candidate.workerId, 'a', JSON.stringify(ranked.map((s) => [s.candidate.workerId, s.cost, s.terms])));
  assert.equal(ranked[0]!.terms.overloaded, undefined);
  assert.equal(ranked[0]!.terms.prefix_requests, 1);
  p.commit(turn, ranked[0]!.candidate);
  // Requests that share that prefix keep coming: from the 4th within the window it is hot, and a
  // (3× the mean in flight) is ranked last however much it holds.
  const picks: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = req([...conversation, ...seq(200, 500_000 + i * 200)]);
    const [best] = p.rank(r, cands());
    picks.push(best!.candidate.workerId);
    p.commit(r, best!.candidate);
  }
  assert.deepEqual(picks.slice(0, 2), ['a', 'a'], 'still cold: affinity');
  assert.ok(picks[2] !== 'a' && picks[3] !== 'a', `hot prefix: ${picks.join(',')}`);
});

test('HotPrefixes counts requests per prefix within the window, bounded in keys', () => {
  const hot = new HotPrefixes(1000, 8);
  const k = prefixKey(seq(512, 1), 512);
  assert.equal(k, prefixKey(seq(512, 1), 512), 'deterministic');
  assert.notEqual(k, prefixKey(seq(512, 1), 496), 'length is part of the key');
  assert.notEqual(k, prefixKey([...seq(511, 1), 9], 512), 'the last token is part of the key');
  hot.add(k, 0);
  hot.add(k, 500);
  assert.equal(hot.count(k, 900), 2);
  assert.equal(hot.count(k, 1200), 1, 'the first left the window');
  assert.equal(hot.count(k, 2000), 0);
  for (let i = 0; i < 50; i++) hot.add(`key${i}`, 3000);
  assert.ok(hot.count('key49', 3000) === 1);
  assert.equal(hot.count('key0', 3000), 0, 'oldest keys dropped beyond maxKeys');
});

test('cache_aware: a prefix hit reaches prompt - 1 tokens (vLLM recomputes the last token): a fully cached 160-token prompt predicts 144', () => {
  const index = indexOf();
  const prompt = seq(160, 42);
  index.applyBatch('a:0', storeBatch(prompt));
  const p = new CacheAwarePolicy(index, W, () => 0.5);
  assert.equal(p.rank(req(prompt), [cand('a')])[0]!.matchedTokens, 144);
  assert.equal(p.rank(req([...prompt, 7]), [cand('a')])[0]!.matchedTokens, 160);
});

test('ties: no match and no load anywhere → the candidate holding fewer blocks (more free cache room) wins', () => {
  const p = new LeastLoadPolicy(W, () => 0.5);
  const full = { ...cand('a'), heldBlocks: 900 };
  const empty = { ...cand('b'), heldBlocks: 10 };
  for (const order of [[full, empty], [empty, full]]) assert.equal(p.rank(req(seq(64, 1)), order)[0]!.candidate.workerId, 'b');
  // Load still comes first: one request in flight outweighs free room.
  const load = new LocalLoad();
  load.start('b:0', 0);
  assert.equal(p.rank(req(seq(64, 1)), [full, { ...cand('b', load), heldBlocks: 10 }])[0]!.candidate.workerId, 'a');
});

/** A candidate with a given number of requests in flight. */
function busy(workerId: string, inFlight: number): Candidate {
  return { ...cand(workerId), load: { inFlight, pendingPrefillTokens: 0, activeDecodes: inFlight } };
}

/** Scripted draws, repeated. */
const draws = (...xs: number[]) => {
  let i = 0;
  return () => xs[i++ % xs.length]!;
};

test('power_of_two: the less loaded of its two samples wins, even when an unsampled one is idler; a tie goes to the first drawn', () => {
  const fleet = () => [busy('d', 0), busy('b', 2), busy('a', 5), busy('c', 0)];
  // Draws 0, 0 over a, b, c, d (source order): samples a then b.
  let r = new PowerOfTwoPolicy(draws(0, 0)).rank(req([1]), fleet());
  assert.deepEqual(r.map((s) => s.candidate.workerId), ['b', 'a', 'c', 'd']);
  assert.deepEqual(r.map((s) => s.terms.sampled), [1, 1, 0, 0]);
  // Draws 0.5, 0: samples c then d, both idle: the first drawn wins.
  r = new PowerOfTwoPolicy(draws(0.5, 0)).rank(req([1]), fleet());
  assert.deepEqual(r.map((s) => s.candidate.workerId).slice(0, 2), ['c', 'd']);
  // Draws 0.75, 0.99: samples d then the one after it among the other three (wrapping: c).
  r = new PowerOfTwoPolicy(draws(0.75, 0.99)).rank(req([1]), [busy('a', 0), busy('b', 0), busy('c', 0), busy('d', 3)]);
  assert.deepEqual(r.map((s) => s.candidate.workerId).slice(0, 2), ['c', 'd']);
  // One candidate: it; none: nothing.
  assert.equal(new PowerOfTwoPolicy(draws(0.3)).rank(req([1]), [busy('a', 9)])[0]!.candidate.workerId, 'a');
  assert.deepEqual(new PowerOfTwoPolicy(draws(0.3)).rank(req([1]), []), []);
});

test('power_of_two (seeded): the busiest of three never wins, the other two share the rest; equal loads spread evenly', () => {
  const p = new PowerOfTwoPolicy(rng(7));
  const wins = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const w = p.rank(req([1]), [busy('a', 1), busy('b', 1), busy('c', 9)])[0]!.candidate.workerId;
    wins.set(w, (wins.get(w) ?? 0) + 1);
  }
  assert.equal(wins.get('c') ?? 0, 0);
  for (const id of ['a', 'b']) assert.ok(Math.abs(wins.get(id)! - 1500) < 150, JSON.stringify([...wins]));
  const even = new PowerOfTwoPolicy(rng(11));
  const n = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const w = even.rank(req([1]), ['a', 'b', 'c'].map((id) => busy(id, 0)))[0]!.candidate.workerId;
    n.set(w, (n.get(w) ?? 0) + 1);
  }
  for (const id of ['a', 'b', 'c']) assert.ok(Math.abs(n.get(id)! - 1000) < 150, JSON.stringify([...n]));
});

const PH = { prefix_tokens: 256, load_factor: 1.25, virtual_nodes: 150 };
const EIGHT = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
const ownerOf = (p: PrefixHashPolicy, tokens: number[], ids: string[], salt: string | null = null) =>
  p.rank(req(tokens, salt), ids.map((id) => busy(id, 0)))[0]!.candidate.workerId;

test('prefix_hash: prompts sharing their first 256 tokens stick to one worker; distinct prefixes spread evenly', () => {
  const p = new PrefixHashPolicy(PH);
  const head = seq(256, 40_000);
  const owner = ownerOf(p, [...head, ...seq(30, 1)], EIGHT);
  for (let i = 0; i < 20; i++) assert.equal(ownerOf(p, [...head, ...seq(10 + i, 1000 * i)], EIGHT), owner);
  // A different token inside the first 256 is another key (over many prompts, some land elsewhere).
  const moved = Array.from({ length: 20 }, (_, i) => ownerOf(p, [...head.slice(0, 255), 7 + i, ...seq(30, 1)], EIGHT)).filter((w) => w !== owner);
  assert.ok(moved.length > 0);
  // The registry's order does not matter.
  assert.equal(ownerOf(new PrefixHashPolicy(PH), [...head, 1], [...EIGHT].reverse()), owner);
  const count = new Map<string, number>();
  for (let i = 0; i < 4000; i++) {
    const w = ownerOf(p, seq(300, 1_000 * i), EIGHT);
    count.set(w, (count.get(w) ?? 0) + 1);
  }
  for (const id of EIGHT) assert.ok(count.get(id)! > 500 * 0.6 && count.get(id)! < 500 * 1.4, JSON.stringify([...count]));
});

test('prefix_hash: a worker leaving moves only its own prefixes (~1/N); the retry list walks the ring; it coming back restores them', () => {
  const p = new PrefixHashPolicy(PH);
  const prompts = Array.from({ length: 2000 }, (_, i) => seq(64, 7_000 * i));
  const before = prompts.map((t) => p.rank(req(t), EIGHT.map((id) => busy(id, 0))));
  const seven = EIGHT.filter((id) => id !== 'e');
  let moved = 0;
  prompts.forEach((t, i) => {
    const was = before[i]!.map((s) => s.candidate.workerId);
    const now = ownerOf(p, t, seven);
    if (was[0] === 'e') {
      moved++;
      assert.equal(now, was[1]); // the next worker clockwise takes it: the owner's first retry
    } else assert.equal(now, was[0]);
  });
  assert.ok(moved / prompts.length > 0.125 * 0.6 && moved / prompts.length < 0.125 * 1.4, `moved ${moved}`);
  prompts.forEach((t, i) => assert.equal(ownerOf(p, t, EIGHT), before[i]![0]!.candidate.workerId));
});

test('prefix_hash: an owner over load_factor × the mean in flight yields to the least loaded; when all are over, the owner keeps it', () => {
  const p = new PrefixHashPolicy(PH);
  const t = seq(300, 123);
  const ids = ['a', 'b', 'c', 'd'];
  const walk = p.rank(req(t), ids.map((id) => busy(id, 0))).map((s) => s.candidate.workerId);
  const owner = walk[0]!;
  const loads = (m: Record<string, number>) => ids.map((id) => busy(id, m[id] ?? 0));
  // 3 on the owner, 1 on each other: mean with this request (6 + 1) / 4, limit 2.19: over.
  let r = p.rank(req(t), loads({ a: 1, b: 1, c: 1, d: 1, [owner]: 3 }));
  assert.equal(r[0]!.candidate.workerId, walk[1]); // least loaded, ring order on ties
  assert.equal(r.find((s) => s.candidate.workerId === owner)!.terms.owner_overloaded, 1);
  // 2 on the owner, 1 on each other: limit (5 + 1) / 4 × 1.25 = 1.875: still over; 2 on two others too: limit 2.8, kept.
  r = p.rank(req(t), loads({ a: 1, b: 1, c: 1, d: 1, [owner]: 2 }));
  assert.notEqual(r[0]!.candidate.workerId, owner);
  r = p.rank(req(t), loads({ [walk[1]!]: 2, [walk[2]!]: 2, [walk[3]!]: 1, [owner]: 2 }));
  assert.equal(r[0]!.candidate.workerId, owner);
  // The lightest one wins over ring order.
  r = p.rank(req(t), loads({ [walk[1]!]: 2, [walk[2]!]: 2, [walk[3]!]: 0, [owner]: 9 }));
  assert.equal(r[0]!.candidate.workerId, walk[3]);
});

test('prefix_hash: the cache salt is part of the key (blocks under another salt never match)', () => {
  const p = new PrefixHashPolicy(PH);
  const differ = Array.from({ length: 40 }, (_, i) => seq(100, 900 * i)).filter((t) => ownerOf(p, t, EIGHT, 'tenant-1') !== ownerOf(p, t, EIGHT, null));
  assert.ok(differ.length > 20, `${differ.length}`);
});

// cache_aware's rank after the large-fleet speedup (one match view, flat sort keys, the prompt head
// hashed once, tier rates looked up once) against the rank as it was written before, kept here as
// the reference: the same candidates in the same order with the same numbers, over random fleets
// (several membership words, media, provisional marks, untrusted streams, two tokenizers, tier
// overrides, equal costs and loads, both costs, a hot-spot guard, infinite costs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import { CacheAwarePolicy, tierTotalMs, type CacheAwareSettings } from '../../router/policies/cache-aware.js';
import { sortByCost, type Candidate, type RouteRequest, type Scored } from '../../router/policies/policy.js';
import type { MatchIndex } from '../../router/policies/match-index.js';
import { tieHead, tieRank, tieRankFrom } from '../../router/cluster/tie-break.js';
import { ratesFor, tierLoadMs } from '../../router/cost/tiers.js';
import { rankReference, sortByCostReference, tieRankReference } from '../../bench/fleet-scale/rank-reference.js';
import { RouterConfigSchema } from '../../router/config.js';
import { allFinite, stableSortIndices } from '../../router/policies/sort.js';
import { prng, randInt } from '../index/helpers.js';

const view = (r: Scored[]) =>
  r.map((s) => ({ source: s.candidate.source, matched: s.matchedTokens, index: s.indexMatchedTokens, byMedium: s.byMedium, prompt: s.promptTokens, terms: s.terms, cost: s.cost }));

const MEDIA = [null, 'CPU', 'DISK'] as const;

/** A random fleet: sources over several 32-slot words, chains of shared and private blocks in random media, provisional marks. */
function fleet(rnd: () => number, nSources: number, bs: number) {
  const index = new PrefixIndex({ provisionalTtlMs: 600_000 });
  const sources = Array.from({ length: nSources }, (_, i) => `w${i >> 1}:${i & 1}`);
  for (const s of sources) index.addSource(s);
  const heads = Array.from({ length: 4 }, (_, h) => Array.from({ length: bs * (2 + h) }, (_, i) => (h + 1) * 1000 + i));
  let hash = 1n;
  const prompts: number[][] = [];
  for (let k = 0; k < nSources * 2; k++) {
    const s = sources[randInt(rnd, nSources)]!;
    const head = heads[randInt(rnd, heads.length)]!;
    const tail = Array.from({ length: bs * (1 + randInt(rnd, 4)) }, () => randInt(rnd, 50));
    const tokens = [...head.slice(0, bs * (1 + randInt(rnd, head.length / bs))), ...tail];
    const n = Math.floor(tokens.length / bs);
    const hashes = Array.from({ length: n }, () => hash++);
    const medium = MEDIA[randInt(rnd, MEDIA.length)]!;
    index.applyBatch(s, { ts: 0, dp_rank: 0, events: [{ type: 'BlockStored', block_hashes: hashes, parent_block_hash: null, token_ids: tokens.slice(0, n * bs), block_size: bs, lora_id: null, medium, lora_name: null }] });
    prompts.push([...tokens, ...Array.from({ length: randInt(rnd, 3 * bs) }, () => randInt(rnd, 50))]);
    if (rnd() < 0.2) index.markProvisional(sources[randInt(rnd, nSources)]!, prompts[prompts.length - 1]!, bs);
  }
  return { index, sources, prompts };
}

function candidatesOf(rnd: () => number, sources: string[], bs: number): Candidate[] {
  const out: Candidate[] = [];
  for (const s of [...sources, 'gone:0']) {
    if (rnd() < 0.2) continue;
    out.push({
      workerId: s.slice(0, s.indexOf(':')),
      rank: Number(s.slice(s.indexOf(':') + 1)),
      source: s,
      trusted: rnd() < 0.8,
      blockSize: bs,
      tokenizerKey: rnd() < 0.15 ? 'other' : 'main',
      // Few distinct loads: many equal costs, so the tie bands and the tie order decide.
      load: { inFlight: randInt(rnd, 3), pendingPrefillTokens: randInt(rnd, 3) * 64, activeDecodes: randInt(rnd, 2) },
      ...(rnd() < 0.7 ? { heldBlocks: randInt(rnd, 3) } : {}),
      ...(rnd() < 0.1 ? { tierRates: rnd() < 0.5 ? { cpu: 50_000 } : { DISK: 0 } } : {}),
    });
  }
  return out;
}

function settings(rnd: () => number): CacheAwareSettings {
  const ttft = rnd() < 0.4;
  const base = RouterConfigSchema.parse({
    cache_aware: {
      ...(ttft ? { cost: 'ttft' } : {}),
      tie_tolerance: [0, 0, 40][randInt(rnd, 3)],
      hot_prefix_requests: 1 + randInt(rnd, 3),
      ...(rnd() < 0.3 ? { tiers: { CPU: 100_000, gpu: 1e9 } } : {}),
    },
  }).cache_aware;
  return base;
}

test('cache_aware rank equals the reference rank over random fleets (one and several membership words, both costs)', () => {
  for (let seed = 1; seed <= 60; seed++) {
    const rnd = prng(seed);
    const bs = [4, 8][randInt(rnd, 2)]!;
    const nSources = [3, 20, 45, 70][randInt(rnd, 4)]!;
    const { index, sources, prompts } = fleet(rnd, nSources, bs);
    const w = settings(rnd);
    const policy = new CacheAwarePolicy(index, w);
    const rates = (policy as unknown as { rates: { observeTtft(s: string, o: object): void } | null }).rates;
    if (rates) for (const s of sources) if (rnd() < 0.5) for (let k = 0; k < 5; k++) rates.observeTtft(s, { uncachedTokens: 100 + randInt(rnd, 900), aheadTokens: randInt(rnd, 500), runningDecodes: randInt(rnd, 4), ttftMs: 20 + randInt(rnd, 200) });
    for (let q = 0; q < 12; q++) {
      const main = prompts[randInt(rnd, prompts.length)]!.slice();
      const other = main.map((t) => t + 1);
      const req: RouteRequest = { tokensFor: (c) => (c.tokenizerKey === 'main' ? main : other), lora: null, salt: null };
      const cands = candidatesOf(rnd, sources, bs);
      const want = view(rankReference(policy, index, req, cands));
      const got = view(policy.rank(req, cands));
      assert.deepStrictEqual(got, want, `seed ${seed} query ${q}`);
      if (cands.length > 0 && rnd() < 0.7) policy.commit(req, cands[randInt(rnd, cands.length)]!);
      if (rates) {
        // The policy's cached rates are the learner's answers, also right after an observation or a forgotten worker.
        const learner = rates as unknown as { ratesOf(s: string): unknown };
        const cached = policy as unknown as { ratesOf(s: string): unknown };
        for (const s of sources) assert.deepStrictEqual(cached.ratesOf(s), learner.ratesOf(s), `seed ${seed} query ${q} rates of ${s}`);
        const s = sources[randInt(rnd, sources.length)]!;
        if (rnd() < 0.5) rates.observeTtft(s, { uncachedTokens: randInt(rnd, 2000), aheadTokens: randInt(rnd, 500), runningDecodes: randInt(rnd, 4), ttftMs: 10 + randInt(rnd, 400) });
        else if (rnd() < 0.2) policy.forget(s);
      }
    }
  }
});

test('cache_aware rank equals the reference with an index that has only match() (no view, no prompt keys)', () => {
  const rnd = prng(99);
  const { index, sources, prompts } = fleet(rnd, 40, 4);
  const plain: MatchIndex = {
    match: (p, o) => {
      // a Map-valued byMedium, as some indexes give it
      const m = index.match(p as number[], o);
      return new Map([...m].map(([k, v]) => [k, { matchedTokens: v.matchedTokens, byMedium: new Map(Object.entries(v.byMedium)) }]));
    },
    markProvisional: (s, t, bs, lora, salt) => index.markProvisional(s, t as number[], bs!, lora, salt),
  };
  const policy = new CacheAwarePolicy(plain, settings(rnd));
  for (let q = 0; q < 20; q++) {
    const main = prompts[randInt(rnd, prompts.length)]!.slice();
    const req: RouteRequest = { tokensFor: () => main, lora: null, salt: null };
    const cands = candidatesOf(rnd, sources, 4);
    assert.deepStrictEqual(view(policy.rank(req, cands)), view(rankReference(policy, plain, req, cands)), `query ${q}`);
  }
});

test('sortByCost equals the comparator sort, also with NaN and infinite costs and loads', () => {
  const rnd = prng(5);
  const odd = [NaN, Infinity, -Infinity];
  for (let k = 0; k < 300; k++) {
    const n = randInt(rnd, 80);
    const special = rnd() < 0.3;
    const scored: Scored[] = Array.from({ length: n }, (_, i) => ({
      candidate: {
        workerId: `w${i}`, rank: 0, source: `w${i}:0`, trusted: true, blockSize: 4, tokenizerKey: 'k',
        load: { inFlight: special && rnd() < 0.1 ? odd[randInt(rnd, 3)]! : randInt(rnd, 3), pendingPrefillTokens: 0, activeDecodes: 0 },
        ...(rnd() < 0.5 ? { heldBlocks: randInt(rnd, 3) } : {}),
      },
      matchedTokens: 0, indexMatchedTokens: 0, promptTokens: 0, terms: {},
      cost: special && rnd() < 0.2 ? odd[randInt(rnd, 3)]! : randInt(rnd, 6) * 0.5,
    }));
    const tol = [0, 0.5, 1.2][randInt(rnd, 3)]!;
    const seed = randInt(rnd, 1000);
    const a = prng(seed);
    const b = prng(seed);
    const coin = rnd() < 0.5;
    assert.deepStrictEqual(
      sortByCost(scored, tol, coin ? a : () => 0).map((s) => s.candidate.source),
      sortByCostReference(scored, tol, coin ? b : () => 0).map((s) => s.candidate.source),
      `case ${k}`,
    );
  }
});

test('stableSortIndices is a stable sort; allFinite spots NaN and infinities', () => {
  const rnd = prng(11);
  for (let k = 0; k < 200; k++) {
    const n = randInt(rnd, 300);
    const k1 = Float64Array.from({ length: n }, () => randInt(rnd, 5));
    const k2 = Float64Array.from({ length: n }, () => randInt(rnd, 3) - 1.5);
    const idx = Int32Array.from({ length: n }, (_, i) => i);
    const from = randInt(rnd, n + 1);
    const to = from + randInt(rnd, n - from + 1);
    const want = [...idx];
    want.splice(from, to - from, ...want.slice(from, to).sort((a, b) => k1[a]! - k1[b]! || k2[a]! - k2[b]!));
    stableSortIndices(idx, from, to, k1, k2);
    assert.deepStrictEqual([...idx], want);
  }
  assert.equal(allFinite(Float64Array.of(1, 2, -3)), true);
  assert.equal(allFinite(Float64Array.of(1, NaN)), false);
  assert.equal(allFinite(Float64Array.of(Infinity)), false);
});

test('tierTotalMs is tierLoadMs(...).total; tieRankFrom(tieHead) and tieRank are the tie rank as it was', () => {
  const rnd = prng(3);
  const names = ['GPU', 'CPU', 'cpu', 'DISK', 'provisional', 'NVME'];
  for (let k = 0; k < 500; k++) {
    const byMedium: Record<string, number> = {};
    for (const n of names) if (rnd() < 0.4) byMedium[n] = randInt(rnd, 3) === 0 ? 0 : randInt(rnd, 5000);
    const rates = ratesFor(rnd() < 0.5 ? { CPU: 100_000 } : undefined, rnd() < 0.3 ? { disk: 0, Gpu: 5e6 } : undefined);
    const memo = rnd() < 0.5 ? new Map<string, number>() : null;
    assert.equal(tierTotalMs(byMedium, rates, memo), tierLoadMs(byMedium, rates).total);
    if (memo) assert.equal(tierTotalMs(byMedium, rates, memo), tierLoadMs(byMedium, rates).total, 'memoised rates');
  }
  for (let k = 0; k < 200; k++) {
    const toks = Array.from({ length: randInt(rnd, 100) }, () => randInt(rnd, 200_000));
    const src = `w${randInt(rnd, 1000)}:${randInt(rnd, 4)}`;
    assert.equal(tieRankFrom(tieHead(toks), src), tieRankReference(toks, src));
    assert.equal(tieRank(toks, src), tieRankReference(toks, src));
  }
});

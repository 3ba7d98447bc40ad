/**
 * cache_aware's rank as it was written before the large-fleet speedup (a Map of match results per
 * token sequence, the comparator sorts, the prompt head hashed per candidate, tier rates built per
 * candidate): the reference test/router/cache-aware-fast.test.ts holds the policy equal to, and the
 * baseline bench/fleet-scale-decision.bench.ts times it against. Its cost and hot-prefix steps are
 * the policy's own (reached through its private members), so only the parts that changed are kept here.
 */
import { meanWaiting, type CacheAwarePolicy, type CacheAwareSettings } from '../../router/policies/cache-aware.js';
import { demoteOverloaded, type Candidate, type RouteRequest, type Scored } from '../../router/policies/policy.js';
import { mediumRecord, provisionalOf, type MatchIndex, type MatchResult } from '../../router/policies/match-index.js';
import { priceHotCopy } from '../../router/policies/hot-prefixes.js';
import { ratesFor, tierLoadMs } from '../../router/cost/tiers.js';

/** tieRank as it was: FNV-1a over the first 64 tokens and the source, then fmix32. */
export function tieRankReference(tokens: ArrayLike<number>, source: string): number {
  let h = 0x811c9dc5;
  const n = Math.min(tokens.length, 64);
  for (let i = 0; i < n; i++) h = Math.imul(h ^ (tokens[i]! >>> 0), 0x01000193);
  for (let i = 0; i < source.length; i++) h = Math.imul(h ^ source.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** sortByCost as it was: { s, r } pairs sorted with comparators. */
export function sortByCostReference(scored: Scored[], tolerance = 0, rnd: () => number = Math.random): Scored[] {
  const keyed = scored.map((s) => ({ s, r: rnd() }));
  keyed.sort((a, b) => a.s.cost - b.s.cost);
  const out: Scored[] = [];
  let i = 0;
  while (i < keyed.length) {
    let j = i + 1;
    while (j < keyed.length && keyed[j]!.s.cost - keyed[i]!.s.cost <= tolerance) j++;
    const band = keyed.slice(i, j);
    band.sort((a, b) => a.s.candidate.load.inFlight - b.s.candidate.load.inFlight || (a.s.candidate.heldBlocks ?? 0) - (b.s.candidate.heldBlocks ?? 0) || a.r - b.r);
    for (const k of band) out.push(k.s);
    i = j;
  }
  return out;
}

interface Internals {
  costOf(c: Candidate, promptTokens: number, matched: number, sharedPending: number, tierMs: number, laterRequests: number): { terms: Record<string, number>; cost: number };
  hotPrefix(req: RouteRequest, scored: Scored[]): boolean;
  rates: unknown;
  w: CacheAwareSettings;
  keysOf(req: RouteRequest, tokens: number[], blockSize: number): unknown;
}

/** CacheAwarePolicy.rank as it was before the speedup (its cost and hot-prefix steps are the policy's own). */
export function rankReference(policy: CacheAwarePolicy, index: MatchIndex, req: RouteRequest, candidates: Candidate[]): Scored[] {
  const p = policy as unknown as Internals;
  const w = p.w;
  const matches = new Map<number[], Map<string, MatchResult>>();
  const later = p.rates !== null ? meanWaiting(candidates) : 0;
  const scored = candidates.map((c): Scored => {
    const tokens = req.tokensFor(c);
    let m = matches.get(tokens);
    if (!m) {
      m = index.match(tokens, { lora: req.lora, salt: req.salt, maxTokens: tokens.length - 1 });
      matches.set(tokens, m);
    }
    const r = m.get(c.source);
    const indexMatched = Math.min(r?.matchedTokens ?? 0, tokens.length);
    const prov = Math.min(provisionalOf(r?.byMedium), indexMatched);
    const matched = c.trusted ? indexMatched : prov === indexMatched ? prov : 0;
    const byMedium = mediumRecord(r?.byMedium);
    const tier = tierLoadMs(c.trusted ? byMedium : undefined, ratesFor(w.tiers, c.tierRates));
    const { terms, cost } = p.costOf(c, tokens.length, matched, Math.min(prov, matched), tier.total, later);
    return { candidate: c, matchedTokens: matched, indexMatchedTokens: indexMatched, byMedium, promptTokens: tokens.length, terms, cost };
  });
  const ttft = p.rates !== null;
  const hot = p.hotPrefix(req, scored);
  if (hot && ttft) priceHotCopy(scored);
  const tie = new Map(scored.map((x) => [x, tieRankReference(req.tokensFor(x.candidate), x.candidate.source)]));
  scored.sort((x, y) => tie.get(x)! - tie.get(y)!);
  const ranked = sortByCostReference(scored, ttft ? w.ttft!.tie_tolerance_ms : w.tie_tolerance, () => 0);
  return hot && !ttft ? demoteOverloaded(ranked, w.balance_abs_threshold, w.balance_rel_threshold) : ranked;
}


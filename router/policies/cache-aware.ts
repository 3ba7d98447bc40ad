import type { Candidate, CostWeights, Policy, RouteRequest, Scored } from './policy.js';
import { costTerms, demoteOverloaded, sortByCost } from './policy.js';
import type { MatchIndex, MatchResult, PromptKeysRef } from './match-index.js';
import { mediumRecord, provisionalOf } from './match-index.js';
import { HotPrefixes, prefixKey, type HotPrefixView } from './hot-prefixes.js';
import { tieRank } from '../cluster/tie-break.js';

/**
 * Event-driven: matched prefix from the index (built from the workers' KV events), weighed
 * against the work queued on each worker. Marks the pick provisional so a burst of siblings follows.
 * The hot-spot guard applies when the matched prefix is hot (shared by many recent requests).
 */
export class CacheAwarePolicy implements Policy {
  readonly name = 'cache_aware';
  private readonly hot: HotPrefixes;
  /** The matched-prefix key of each ranked request, counted when it is committed (a memo: no answer depends on it). */
  private readonly keys = new WeakMap<RouteRequest, { key: string; holders: string[] }>();
  private readonly promptKeys = new WeakMap<number[], PromptKeysRef>();

  constructor(
    private readonly index: MatchIndex,
    private readonly w: CostWeights,
    /** Unused: ties are broken by a replica-consistent hash (kept for createPolicy's signature). */
    _rnd: () => number = Math.random,
  ) {
    this.hot = new HotPrefixes(w.hot_prefix_window_ms ?? 5000);
  }

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    // One walk per distinct token sequence (one per tokenizer; usually just one).
    const matches = new Map<number[], Map<string, MatchResult>>();
    const scored = candidates.map((c): Scored => {
      const tokens = req.tokensFor(c);
      let m = matches.get(tokens);
      if (!m) {
        m = this.index.match(this.keysOf(req, tokens, c.blockSize), { lora: req.lora, salt: req.salt, maxTokens: tokens.length - 1 });
        matches.set(tokens, m);
      }
      const r = m.get(c.source);
      const indexMatched = Math.min(r?.matchedTokens ?? 0, tokens.length);
      // Untrusted stream: its real blocks count as zero; what this router itself predicted
      // (provisional marks) still counts while nothing real is known for the prompt.
      const prov = Math.min(provisionalOf(r?.byMedium), indexMatched);
      const matched = c.trusted ? indexMatched : prov === indexMatched ? prov : 0;
      const { terms, cost } = costTerms(this.w, tokens.length, matched, c.load, Math.min(prov, matched));
      return {
        candidate: c,
        matchedTokens: matched,
        indexMatchedTokens: indexMatched,
        byMedium: mediumRecord(r?.byMedium),
        promptTokens: tokens.length,
        terms,
        cost,
      };
    });
    // Ties go by a replica-consistent hash (router/cluster/tie-break.ts), not at random: a stable pre-order, then no coin.
    scored.sort((x, y) => tieRank(req.tokensFor(x.candidate), x.candidate.source) - tieRank(req.tokensFor(y.candidate), y.candidate.source));
    const ranked = sortByCost(scored, this.w.tie_tolerance, () => 0);
    if (ranked.length === 0) return ranked;
    let best = ranked[0]!;
    let least = best.matchedTokens;
    for (const s of ranked) {
      if (s.matchedTokens > best.matchedTokens) best = s;
      least = Math.min(least, s.matchedTokens);
    }
    // The cache pulls hard only when some workers hold most of the prompt and others do not; a
    // small shared head (or the same prefix everywhere) leaves the choice to the load terms.
    if (best.matchedTokens - least < 0.5 * best.promptTokens) return ranked;
    const key = prefixKey(req.tokensFor(best.candidate), best.matchedTokens);
    const holders = ranked.filter((s) => s.indexMatchedTokens >= best.matchedTokens).map((s) => s.candidate.source);
    this.keys.set(req, { key, holders });
    const sharing = this.hot.count(key) + 1;
    for (const s of ranked) s.terms.prefix_requests = sharing;
    if (sharing < (this.w.hot_prefix_requests ?? 1)) return ranked;
    return demoteOverloaded(ranked, this.w.balance_abs_threshold, this.w.balance_rel_threshold);
  }

  /** The hottest matched prefixes (dashboard). */
  hotPrefixes(n: number): HotPrefixView[] {
    return this.hot.top(n);
  }

  /** The prompt's block keys, hashed once per request and shared by rank and commit (a cache, not state). */
  private keysOf(req: RouteRequest, tokens: number[], blockSize: number): number[] | PromptKeysRef {
    if (!this.index.promptKeys) return tokens;
    let k = this.promptKeys.get(tokens);
    if (!k) {
      k = this.index.promptKeys(tokens, blockSize, { lora: req.lora, salt: req.salt });
      this.promptKeys.set(tokens, k);
    }
    return k;
  }

  commit(req: RouteRequest, pick: Candidate): void {
    const tokens = req.tokensFor(pick);
    if (tokens.length >= pick.blockSize) this.index.markProvisional(pick.source, this.keysOf(req, tokens, pick.blockSize), pick.blockSize, req.lora, req.salt);
    const k = this.keys.get(req);
    if (k !== undefined) this.hot.add(k.key, Date.now(), k.holders.includes(pick.source) ? k.holders : [...k.holders, pick.source]);
    this.keys.delete(req); // a retry of the same request is not another request
  }
}

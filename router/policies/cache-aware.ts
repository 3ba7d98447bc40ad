import type { Candidate, CostWeights, Policy, RouteRequest, Scored } from './policy.js';
import { costTerms, demoteOverloaded, sortByCost } from './policy.js';
import type { MatchIndex, MatchResult, PromptKeysRef } from './match-index.js';
import { mediumRecord, provisionalOf } from './match-index.js';
import { HotPrefixes, prefixKey, priceHotCopy, type HotPrefixView } from './hot-prefixes.js';
import { tieRank } from '../cluster/tie-break.js';
import { RateLearner, type RateSettings } from '../cost/rates.js';
import { predictTtft } from '../cost/ttft-model.js';
import { ratesFor, tierLoadMs } from '../cost/tiers.js';

/** cache_aware's settings: the weighted cost's weights, and the ttft cost's (router/config.ts). */
export interface CacheAwareSettings extends CostWeights {
  cost?: 'ttft' | 'weighted';
  ttft?: RateSettings & { delay_weight: number; tie_tolerance_ms: number };
  /** Transfer rates of slower cache tiers, tokens/s by medium (router/cost/tiers.ts). */
  tiers?: Record<string, number>;
}

/**
 * Event-driven: matched prefix from the index (built from the workers' KV events), weighed
 * against the work queued on each worker. Marks the pick provisional so a burst of siblings follows.
 * Two costs: "ttft" (predicted time to first token plus the delay added to the others, in ms, at
 * each worker's learned rates: `rates` is fed by the pipeline) and "weighted" (tokens × weights).
 * When the matched prefix is hot (shared by many recent requests): with "ttft" a copy elsewhere is
 * priced as the requester's own time only (the copy serves the next sharers too), with "weighted"
 * the balance-threshold guard demotes overloaded holders.
 */
export class CacheAwarePolicy implements Policy {
  readonly name = 'cache_aware';
  private readonly hot: HotPrefixes;
  /** The matched-prefix key of each ranked request, counted when it is committed (a memo: no answer depends on it). */
  private readonly keys = new WeakMap<RouteRequest, { key: string; holders: string[] }>();
  private readonly promptKeys = new WeakMap<number[], PromptKeysRef>();

  /** Each worker's learned speed (ttft cost only). */
  readonly rates: RateLearner | null;

  constructor(
    private readonly index: MatchIndex,
    private readonly w: CacheAwareSettings,
    /** Unused: ties are broken by a replica-consistent hash (kept for createPolicy's signature). */
    _rnd: () => number = Math.random,
  ) {
    this.hot = new HotPrefixes(w.hot_prefix_window_ms ?? 5000);
    if (w.cost === 'ttft' && !w.ttft) throw new Error('cache_aware cost "ttft" needs its ttft settings');
    this.rates = w.cost === 'ttft' ? new RateLearner(w.ttft!) : null;
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
      const byMedium = mediumRecord(r?.byMedium);
      // Only real hits load from a tier (an untrusted stream's real blocks count as zero).
      const tier = tierLoadMs(c.trusted ? byMedium : undefined, ratesFor(this.w.tiers, c.tierRates));
      const { terms, cost } = this.costOf(c, tokens.length, matched, Math.min(prov, matched), tier.total);
      return {
        candidate: c,
        matchedTokens: matched,
        indexMatchedTokens: indexMatched,
        byMedium,
        promptTokens: tokens.length,
        terms,
        cost,
      };
    });
    const ttft = this.rates !== null;
    const hot = this.hotPrefix(req, scored);
    if (hot && ttft) priceHotCopy(scored);
    // Ties go by a replica-consistent hash (router/cluster/tie-break.ts), not at random: a stable pre-order, then no coin.
    const tie = new Map(scored.map((x) => [x, tieRank(req.tokensFor(x.candidate), x.candidate.source)]));
    scored.sort((x, y) => tie.get(x)! - tie.get(y)!);
    const ranked = sortByCost(scored, ttft ? this.w.ttft!.tie_tolerance_ms : this.w.tie_tolerance, () => 0);
    return hot && !ttft ? demoteOverloaded(ranked, this.w.balance_abs_threshold, this.w.balance_rel_threshold) : ranked;
  }

  private costOf(c: Candidate, promptTokens: number, matched: number, sharedPending: number, tierMs: number): { terms: Record<string, number>; cost: number } {
    if (!this.rates) {
      const base = costTerms(this.w, promptTokens, matched, c.load, sharedPending);
      if (tierMs <= 0) return base;
      // In prefill-token equivalents: the tokens the prior prefill rate computes in that load time.
      const tierLoad = this.w.prefill_weight * (tierMs / 1000) * (this.w.ttft?.prior.prefill_tokens_per_s ?? 20_000);
      return { terms: { ...base.terms, tier_load: Math.round(tierLoad * 100) / 100 }, cost: base.cost + tierLoad };
    }
    const rates = this.rates.ratesOf(c.source);
    const p = predictTtft({ promptTokens, matchedTokens: matched, sharedPending, load: c.load, rates, delayWeight: this.w.ttft!.delay_weight });
    const { cost_ms, ...parts } = p;
    // step_ms (the inter-token gap there with this request decoding too) explains only: not in the cost.
    const stepMs = rates.decodeStepMs + rates.decodeMsPerSeq * (c.load.activeDecodes + 1);
    const r2 = (v: number) => Math.round(v * 100) / 100;
    // The tier load comes before the prefill can use the hit: it adds to this request's TTFT.
    const terms: Record<string, number> = { ...parts, ms_per_ktok: r2(rates.msPerKtok), step_ms: r2(stepMs), rates_learned: rates.basis === 'prior' ? 0 : rates.basis === 'fleet' ? 0.5 : 1 };
    if (tierMs > 0) {
      terms.tier_load_ms = r2(tierMs);
      terms.predicted_ttft_ms = r2(parts.predicted_ttft_ms + tierMs);
    }
    return { terms, cost: cost_ms + tierMs };
  }

  /**
   * Whether the prompt's matched prefix is hot (records its key for commit). The cache pulls hard
   * only when some workers hold most of the prompt and others do not; a small shared head (or the
   * same prefix everywhere) leaves the choice to the load terms.
   */
  private hotPrefix(req: RouteRequest, scored: Scored[]): boolean {
    if (scored.length === 0) return false;
    let best = scored[0]!;
    let least = best.matchedTokens;
    for (const s of scored) {
      if (s.matchedTokens > best.matchedTokens) best = s;
      least = Math.min(least, s.matchedTokens);
    }
    if (best.matchedTokens - least < 0.5 * best.promptTokens) return false;
    const key = prefixKey(req.tokensFor(best.candidate), best.matchedTokens);
    const holders = scored.filter((s) => s.indexMatchedTokens >= best.matchedTokens).map((s) => s.candidate.source);
    this.keys.set(req, { key, holders });
    const sharing = this.hot.count(key) + 1;
    for (const s of scored) s.terms.prefix_requests = sharing;
    return sharing >= (this.w.hot_prefix_requests ?? 1);
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

  forget(source: string): void {
    this.rates?.forget(source);
  }
}

import type { Candidate, CostWeights, Policy, RouteRequest, Scored } from './policy.js';
import { costTerms, sortByCost } from './policy.js';
import { stableSortIndices } from './sort.js';
import type { MatchIndex, PromptKeysRef } from './match-index.js';
import { mediumRecord } from './match-index.js';
import { guardHotSpot, HotPrefixes, prefixKey, priceHotCopy, type HotPrefixView } from './hot-prefixes.js';
import { tieHead, tieRankFrom } from '../cluster/tie-break.js';
import { pendingOverlap } from '../cluster/pending-blocks.js';
import { promptKeysOf } from '../../src/index/prefix-index.js';
import { RateLearner, type RateSettings, type WorkerRates } from '../cost/rates.js';
import { predictTtft, type TtftParts } from '../cost/ttft-model.js';
import { ratesFor, tierRate, type TierRates } from '../cost/tiers.js';

/** cache_aware's settings: the weighted cost's weights, and the ttft cost's (router/config.ts). */
export interface CacheAwareSettings extends CostWeights {
  cost?: 'ttft' | 'weighted';
  ttft?: RateSettings & { delay_weight: number; waiting_weight: number; later_weight: number; tie_tolerance_ms: number };
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

  /** Each worker's learned speed (ttft cost only). */
  readonly rates: RateLearner | null;
  /** rates.ratesOf per source, valid while rates.revision stays (a large fleet's decision asks every candidate's). */
  private readonly rateCache = new Map<string, WorkerRates>();
  private rateRev = -1;

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
    const lookups = new Map<number[], Lookup>();
    let lastTokens: number[] | null = null;
    let last: Lookup | null = null;
    // Tier rates: the fleet's, unless a worker has its own (ratesFor), each medium's rate looked up once.
    const fleetRates = ratesFor(this.w.tiers, undefined);
    const fleetRate = new Map<string, number>();
    const n = candidates.length;
    const scored = new Array<Scored>(n);
    const later = this.rates ? meanWaiting(candidates) : 0;
    // Candidates whose pending prefill computes part of this prompt's matched prefix (the hot-spot guard leaves them alone).
    let computing: Set<Scored> | null = null;
    for (let i = 0; i < n; i++) {
      const c = candidates[i]!;
      const tokens = req.tokensFor(c);
      if (tokens !== lastTokens) {
        lastTokens = tokens;
        last = lookups.get(tokens) ?? null;
        if (last === null) {
          last = this.lookup(req, tokens, c.blockSize);
          lookups.set(tokens, last);
        }
      }
      const m = last!;
      const indexMatched = Math.min(m.matched(c.source), tokens.length);
      const byMedium = m.byMedium(c.source);
      // Untrusted stream: its real blocks count as zero; what this router itself predicted
      // (provisional marks) still counts while nothing real is known for the prompt.
      const prov = Math.min(byMedium?.provisional ?? 0, indexMatched);
      let matched = c.trusted ? indexMatched : prov === indexMatched ? prov : 0;
      // Only real hits load from a tier (an untrusted stream's real blocks count as zero).
      const tierMs = c.trusted && byMedium !== undefined ? tierTotalMs(byMedium, c.tierRates ? ratesFor(this.w.tiers, c.tierRates) : fleetRates, c.tierRates ? null : fleetRate) : 0;
      // Queued prefill computing this prompt's prefix is shared, not extra: known by block keys
      // where the load says which blocks it computes (shared load), else as the provisional match.
      let sharedPending = Math.min(prov, matched);
      const pend = c.load.pending;
      if (pend !== undefined && pend.keyedTokens > 0 && c.load.pendingPrefillTokens > 0) {
        const maxBlocks = Math.floor((tokens.length - 1) / c.blockSize);
        const o = pendingOverlap(pend, promptKeysOf(tokens, c.blockSize, req.lora, req.salt).keys(c.blockSize, maxBlocks), c.blockSize, matched, maxBlocks);
        matched = o.matchedTokens;
        sharedPending = o.sharedTokens + Math.min(sharedPending, Math.max(0, c.load.pendingPrefillTokens - pend.keyedTokens));
      }
      const { terms, cost } = this.costOf(c, tokens.length, matched, sharedPending, tierMs, later);
      scored[i] = {
        candidate: c,
        matchedTokens: matched,
        indexMatchedTokens: indexMatched,
        byMedium,
        promptTokens: tokens.length,
        terms,
        cost,
      };
      if (sharedPending > 0 && c.load.pendingPrefillTokens > 0) (computing ??= new Set()).add(scored[i]!);
    }
    const ttft = this.rates !== null;
    const hot = this.hotPrefix(req, scored);
    if (hot && ttft) priceHotCopy(scored);
    // Ties go by a replica-consistent hash (router/cluster/tie-break.ts), not at random: a stable pre-order, then no coin.
    // The prompt head is hashed once per token sequence, then each candidate adds only its source.
    const tie = new Float64Array(n);
    let headTokens: number[] | null = null;
    let head = 0;
    for (let i = 0; i < n; i++) {
      const tokens = req.tokensFor(scored[i]!.candidate);
      if (tokens !== headTokens) {
        headTokens = tokens;
        head = tieHead(tokens);
      }
      tie[i] = tieRankFrom(head, scored[i]!.candidate.source);
    }
    // Stable, by tie rank: as scored.sort((x, y) => tie(x) - tie(y)) (the ranks are uint32).
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    stableSortIndices(order, 0, n, tie);
    const pre = new Array<Scored>(n);
    for (let i = 0; i < n; i++) pre[i] = scored[order[i]!]!;
    const ranked = sortByCost(pre, ttft ? this.w.ttft!.tie_tolerance_ms : this.w.tie_tolerance, () => 0);
    return hot && !ttft ? guardHotSpot(ranked, this.w.balance_abs_threshold, this.w.balance_rel_threshold, computing) : ranked;
  }

  /** The index's answers for one token sequence, per source (a view when the index has one, else match()'s Map). */
  private lookup(req: RouteRequest, tokens: number[], blockSize: number): Lookup {
    const prompt = this.keysOf(req, tokens, blockSize);
    const opts = { lora: req.lora, salt: req.salt, maxTokens: tokens.length - 1 };
    if (this.index.matchView) {
      const v = this.index.matchView(prompt, opts);
      return { matched: (s) => v.matchedTokens(s), byMedium: (s) => v.byMedium(s) };
    }
    const m = this.index.match(prompt, opts);
    return { matched: (s) => m.get(s)?.matchedTokens ?? 0, byMedium: (s) => mediumRecord(m.get(s)?.byMedium) };
  }

  private costOf(c: Candidate, promptTokens: number, matched: number, sharedPending: number, tierMs: number, laterRequests: number): { terms: Record<string, number>; cost: number } {
    if (!this.rates) {
      const base = costTerms(this.w, promptTokens, matched, c.load, sharedPending);
      if (tierMs <= 0) return base;
      // In prefill-token equivalents: the tokens the prior prefill rate computes in that load time.
      const tierLoad = this.w.prefill_weight * (tierMs / 1000) * (this.w.ttft?.prior.prefill_tokens_per_s ?? 20_000);
      return { terms: { ...base.terms, tier_load: Math.round(tierLoad * 100) / 100 }, cost: base.cost + tierLoad };
    }
    const rates = this.ratesOf(c.source);
    const t = this.w.ttft!;
    const p = predictTtft({ promptTokens, matchedTokens: matched, sharedPending, load: c.load, rates, delayWeight: t.delay_weight, laterRequests, laterWeight: t.later_weight, waitingWeight: t.waiting_weight });
    // The parts but cost_ms, in their order (a plain copy: object rest and spread were a good part of a 512-candidate decision).
    const terms: Record<string, number> = {};
    for (const k in p) if (k !== 'cost_ms') terms[k] = p[k as keyof TtftParts];
    // step_ms (the inter-token gap there with this request decoding too) explains only: not in the cost.
    const stepMs = rates.decodeStepMs + rates.decodeMsPerSeq * (c.load.activeDecodes + 1);
    terms.ms_per_ktok = r2(rates.msPerKtok);
    terms.step_ms = r2(stepMs);
    terms.rates_learned = rates.basis === 'prior' ? 0 : rates.basis === 'fleet' ? 0.5 : 1;
    // The tier load comes before the prefill can use the hit: it adds to this request's TTFT.
    if (tierMs > 0) {
      terms.tier_load_ms = r2(tierMs);
      terms.predicted_ttft_ms = r2(p.predicted_ttft_ms + tierMs);
    }
    return { terms, cost: p.cost_ms + tierMs };
  }

  private ratesOf(source: string): WorkerRates {
    const learner = this.rates!;
    if (learner.revision !== this.rateRev) {
      this.rateCache.clear();
      this.rateRev = learner.revision;
    }
    let r = this.rateCache.get(source);
    if (r === undefined) {
      r = learner.ratesOf(source);
      this.rateCache.set(source, r);
    }
    return r;
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

  /** The prompt's block keys, hashed once per request and shared by rank and commit (the index memoizes them per token array). */
  private keysOf(req: RouteRequest, tokens: number[], blockSize: number): number[] | PromptKeysRef {
    return this.index.promptKeys ? this.index.promptKeys(tokens, blockSize, { lora: req.lora, salt: req.salt }) : tokens;
  }

  commit(req: RouteRequest, pick: Candidate): void {
    const tokens = req.tokensFor(pick);
    if (tokens.length >= pick.blockSize) this.index.markProvisional(pick.source, this.keysOf(req, tokens, pick.blockSize), pick.blockSize, req.lora, req.salt);
    const k = this.keys.get(req);
    if (k !== undefined) this.hot.add(k.key, Date.now(), k.holders.includes(pick.source) ? k.holders : [...k.holders, pick.source]);
    this.keys.delete(req); // a retry of the same request is not another request
  }

  forget(source: string): void {
    this.rateCache.delete(source);
    this.rates?.forget(source);
  }
}

const r2 = (v: number) => Math.round(v * 100) / 100;

/** The candidates' mean count of requests sent and still before their first token (the ttft cost's delay_to_later_ms). */
export function meanWaiting(candidates: Candidate[]): number {
  if (candidates.length === 0) return 0;
  let sum = 0;
  for (const c of candidates) sum += Math.max(0, c.load.inFlight - c.load.activeDecodes);
  return sum / candidates.length;
}

/** One token sequence's match, per source: tokens held, and by tier (a fresh record; undefined: unknown source). */
interface Lookup {
  matched(source: string): number;
  byMedium(source: string): Record<string, number> | undefined;
}

/**
 * tierLoadMs(byMedium, rates).total (router/cost/tiers.ts) term for term, in the same order, without
 * building its by-tier record; `memo` caches each medium's rate of one rates object (null: none).
 * test/router/cache-aware-fast.test.ts holds the two equal.
 */
export function tierTotalMs(byMedium: Readonly<Record<string, number>>, rates: Readonly<TierRates>, memo: Map<string, number> | null): number {
  let total = 0;
  for (const medium in byMedium) {
    const tokens = byMedium[medium]!;
    if (medium === 'provisional' || tokens <= 0) continue;
    let rate = memo?.get(medium);
    if (rate === undefined) {
      rate = tierRate(medium, rates);
      memo?.set(medium, rate);
    }
    if (!Number.isFinite(rate)) continue;
    total += (tokens / rate) * 1000;
  }
  return total;
}

import type { WorkerLoad } from '../load.js';
import { allFinite, stableSortIndices } from './sort.js';

/** One place a request can go: a (worker, dp rank) stream with its current load. */
export interface Candidate {
  workerId: string;
  rank: number;
  /** Index source id: `${workerId}:${rank}`. */
  source: string;
  /** The worker's event stream is trusted: its cache score counts. Untrusted → matched tokens count as 0. */
  trusted: boolean;
  blockSize: number;
  /** Key of the tokenizer this worker uses (candidates with different tokenizers see different token ids). */
  tokenizerKey: string;
  load: WorkerLoad;
  /** Blocks its cache holds (index tree): ties go to the one with more free room. Absent: unknown (0). */
  heldBlocks?: number;
  /** This worker's own transfer rates of slower cache tiers (tokens/s by medium), if configured. */
  tierRates?: Readonly<Record<string, number>>;
}

export interface RouteRequest {
  /** Prompt token ids as the candidate's tokenizer produces them. */
  tokensFor(c: Candidate): number[];
  lora: string | null;
  /** vLLM's cache_salt: blocks computed under another salt do not match. */
  salt: string | null;
  /** Why the prompt could not be tokenized as the engine would (e.g. image parts): routed by load only. */
  loadOnly?: string;
}

export interface Scored {
  candidate: Candidate;
  /** Prefix tokens the worker is expected to hold, as counted in the cost. */
  matchedTokens: number;
  /** What the index reports, before trust is applied (explain only). */
  indexMatchedTokens: number;
  byMedium?: Record<string, number>;
  promptTokens: number;
  /** Each term of the cost, named. */
  terms: Record<string, number>;
  cost: number;
}

/**
 * A routing policy. `rank` is pure: it ranks candidates best first (the proxy retries down the
 * list) and changes nothing, so /route is a faithful dry run. `commit` records that the request
 * was sent to `pick` (provisional entries, own tree, rotation); the pipeline calls it once per attempt.
 */
export interface Policy {
  readonly name: string;
  rank(req: RouteRequest, candidates: Candidate[]): Scored[];
  commit?(req: RouteRequest, pick: Candidate): void;
  /** A source left (worker removed): forget it. */
  forget?(source: string): void;
  /** The hottest matched prefixes, for the dashboard (policies that track them). */
  hotPrefixes?(n: number): { key: string; requests: number; holders: string[] }[];
}

export interface CostWeights {
  prefill_weight: number;
  queued_prefill_weight: number;
  decode_weight: number;
  tie_tolerance: number;
  /** Hot-spot guard (cache_aware); absent = no guard. */
  balance_abs_threshold?: number;
  balance_rel_threshold?: number;
  /** The guard applies to prompts whose matched prefix this many routed requests shared within the window (absent: always). */
  hot_prefix_requests?: number;
  hot_prefix_window_ms?: number;
}

/**
 * Moves overloaded candidates after the others, keeping each group's order: a candidate is
 * overloaded when its in-flight count exceeds the mean over all candidates by more than `abs`
 * and by more than `rel` times.
 */
export function demoteOverloaded(ranked: Scored[], abs: number | undefined, rel: number | undefined): Scored[] {
  if (abs === undefined || rel === undefined || ranked.length < 2) return ranked;
  let total = 0;
  for (const s of ranked) total += s.candidate.load.inFlight;
  const mean = total / ranked.length;
  const ok: Scored[] = [];
  const over: Scored[] = [];
  for (const s of ranked) {
    const n = s.candidate.load.inFlight;
    if (n - mean > abs && n > mean * rel) {
      s.terms.overloaded = 1;
      over.push(s);
    } else ok.push(s);
  }
  return over.length === 0 ? ranked : [...ok, ...over];
}

/**
 * Expected cost of serving a request on a candidate now, in prefill-token equivalents:
 *   prefill_weight × (prompt − matched)
 * + queued_prefill_weight × (pending prefill − the part of it computing this prompt's provisional prefix)
 * + decode_weight × in-flight.
 */
export function costTerms(
  w: CostWeights,
  promptTokens: number,
  matchedTokens: number,
  load: WorkerLoad,
  /** Prefix tokens matched only provisionally: requests already queued there are computing them, so that queued work is shared, not extra. */
  sharedPending = 0,
): { terms: Record<string, number>; cost: number } {
  const uncached = Math.max(0, promptTokens - matchedTokens);
  const terms = {
    prefill: w.prefill_weight * uncached,
    queued_prefill: w.queued_prefill_weight * Math.max(0, load.pendingPrefillTokens - sharedPending),
    decode: w.decode_weight * load.inFlight,
  };
  return { terms, cost: terms.prefill + terms.queued_prefill + terms.decode };
}

/**
 * Lowest cost first; costs within `tolerance` of each other are ties, broken toward
 * spreading load: fewer requests in flight first, then more free cache room (fewer blocks
 * held: a new prefix evicts less there), then at random.
 */
export function sortByCost(scored: Scored[], tolerance = 0, rnd: () => number = Math.random): Scored[] {
  // Indices sorted by flat keys (router/policies/sort.ts): the order sorting { s, r } pairs with the
  // comparators below gives, without calling a comparator per comparison.
  const n = scored.length;
  const r = new Float64Array(n);
  const cost = new Float64Array(n);
  const inFlight = new Float64Array(n);
  const held = new Float64Array(n);
  const idx = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const s = scored[i]!;
    r[i] = rnd();
    cost[i] = s.cost;
    inFlight[i] = s.candidate.load.inFlight;
    held[i] = s.candidate.heldBlocks ?? 0;
    idx[i] = i;
  }
  const tmp = new Int32Array(n);
  if (allFinite(cost)) stableSortIndices(idx, 0, n, cost, null, null, tmp);
  else idx.set(Array.from(idx).sort((a, b) => cost[a]! - cost[b]!));
  const finiteLoad = allFinite(inFlight) && allFinite(held) && allFinite(r);
  // Group into tie bands (relative to each band's first member), then order inside a band:
  // fewer in flight, then fewer blocks held, then the coin.
  const out = new Array<Scored>(n);
  let i = 0;
  while (i < n) {
    let j = i + 1;
    while (j < n && cost[idx[j]!]! - cost[idx[i]!]! <= tolerance) j++;
    if (j - i > 1) {
      if (finiteLoad) stableSortIndices(idx, i, j, inFlight, held, r, tmp);
      else idx.set(Array.from(idx.subarray(i, j)).sort((a, b) => inFlight[a]! - inFlight[b]! || held[a]! - held[b]! || r[a]! - r[b]!), i);
    }
    for (let k = i; k < j; k++) out[k] = scored[idx[k]!]!;
    i = j;
  }
  return out;
}

/** A Scored entry that carries no cache knowledge (baselines). */
export function plainScore(c: Candidate, promptTokens: number, cost: number, terms: Record<string, number> = {}): Scored {
  return { candidate: c, matchedTokens: 0, indexMatchedTokens: 0, promptTokens, terms, cost };
}


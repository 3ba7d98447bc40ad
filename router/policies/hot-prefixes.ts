/**
 * How many requests were recently routed with the same matched prefix. A prefix many requests
 * share (a system prompt, one prompt for everybody) is "hot": piling them all onto the worker
 * that holds it is a hot spot, and copying it to another worker pays for itself. A prefix one
 * conversation owns is not: its next turn is worth waiting for.
 */
import { demoteOverloaded, type Scored } from './policy.js';

/** One hot prefix as the dashboard shows it: its key (length and hash, never token ids), its count, where copies were. */
export interface HotPrefixView {
  key: string;
  requests: number;
  /** Sources that held it when it was last routed (plus the one it went to). */
  holders: string[];
}

export class HotPrefixes {
  private readonly seen = new Map<string, number[]>();
  private readonly holders = new Map<string, string[]>();
  private sweepAt = 0;

  constructor(
    private readonly windowMs: number,
    private readonly maxKeys = 10_000,
  ) {}

  /** Requests routed with this prefix within the window. */
  count(key: string, now = Date.now()): number {
    const ts = this.seen.get(key);
    if (!ts) return 0;
    const from = now - this.windowMs;
    while (ts.length > 0 && ts[0]! < from) ts.shift();
    return ts.length;
  }

  add(key: string, now = Date.now(), holders?: string[]): void {
    if (holders) this.holders.set(key, holders);
    let ts = this.seen.get(key);
    if (!ts) {
      if (this.seen.size >= this.maxKeys) this.sweep(now, true);
      ts = [];
      this.seen.set(key, ts);
    }
    ts.push(now);
    if (ts.length > 4096) ts.splice(0, ts.length - 4096);
    if (now >= this.sweepAt) this.sweep(now, false);
  }

  /** The `n` prefixes with the most requests in the window, most first. */
  top(n: number, now = Date.now()): HotPrefixView[] {
    const out: HotPrefixView[] = [];
    for (const key of this.seen.keys()) {
      const requests = this.count(key, now);
      if (requests > 0) out.push({ key, requests, holders: this.holders.get(key) ?? [] });
    }
    return out.sort((a, b) => b.requests - a.requests).slice(0, n);
  }

  private sweep(now: number, full: boolean): void {
    this.sweepAt = now + this.windowMs;
    const from = now - this.windowMs;
    for (const [k, ts] of this.seen) if (ts.length === 0 || ts.at(-1)! < from) this.drop(k);
    // Still full of live keys: drop the oldest inserted (Map order) to stay bounded.
    if (full) for (const k of this.seen.keys()) {
      if (this.seen.size < this.maxKeys) break;
      this.drop(k);
    }
  }

  private drop(key: string): void {
    this.seen.delete(key);
    this.holders.delete(key);
  }
}

/**
 * A cheap key for the first `length` tokens: their count plus every 8th token and the last one
 * (two 32-bit FNV-1a lanes). A collision only makes a cold prefix look hot.
 */
export function prefixKey(tokens: number[], length: number): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x9e3779b9;
  const n = Math.min(length, tokens.length);
  for (let i = 0; i < n; i += 8) {
    const t = tokens[i]!;
    h1 = Math.imul(h1 ^ t, 0x01000193);
    h2 = Math.imul(h2 ^ t, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  if (n > 0) h1 = Math.imul(h1 ^ tokens[n - 1]!, 0x01000193);
  return `${n}:${(h1 >>> 0).toString(36)}:${(h2 >>> 0).toString(36)}`;
}

/**
 * The ttft cost's answer to a hot prefix: a worker without it is priced by the requester's own
 * predicted TTFT only (waiting there plus recomputing the prefix), not by the delay its prefill
 * adds to the others there — the copy serves the prefix's next sharers too. So a hot prefix is
 * copied exactly when waiting at the holders would take longer than recomputing elsewhere, with
 * no request-count thresholds. Holders keep their full cost (nothing to copy there).
 */
export function priceHotCopy(scored: { matchedTokens: number; terms: Record<string, number>; cost: number }[]): void {
  let most = 0;
  for (const s of scored) most = Math.max(most, s.matchedTokens);
  for (const s of scored) {
    if (s.matchedTokens >= most || s.terms.predicted_ttft_ms === undefined) continue;
    s.cost = s.terms.predicted_ttft_ms;
    s.terms.hot_copy = 1;
  }
}

/**
 * The weighted cost's hot-spot guard: demoteOverloaded, except for a holder whose pending prefill
 * is still computing the prompt's matched prefix (`computing`). Its requests in flight are that
 * prefix's siblings waiting for the same computation: a copy elsewhere relieves nothing (the
 * prefix is cached nowhere yet) and computes it again, so a burst of siblings of a new prefix
 * stays where its prefix is being computed until its first request got its first token; from
 * then on the guard spreads the decodes as before. The weighted cost itself still moves a sibling
 * on when the queue there outweighs recomputing the prefix.
 */
export function guardHotSpot(ranked: Scored[], abs: number | undefined, rel: number | undefined, computing: ReadonlySet<Scored> | null): Scored[] {
  const out = demoteOverloaded(ranked, abs, rel);
  if (out === ranked || computing === null) return out;
  let spared = false;
  for (const s of computing) {
    if (s.terms.overloaded !== 1) continue;
    delete s.terms.overloaded;
    s.terms.computing_prefix = 1;
    spared = true;
  }
  if (!spared) return out;
  const ok: Scored[] = [];
  const over: Scored[] = [];
  for (const s of ranked) (s.terms.overloaded === 1 ? over : ok).push(s);
  return [...ok, ...over];
}

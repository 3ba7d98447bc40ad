/**
 * How many requests were recently routed with the same matched prefix. A prefix many requests
 * share (a system prompt, one prompt for everybody) is "hot": piling them all onto the worker
 * that holds it is a hot spot, and copying it to another worker pays for itself. A prefix one
 * conversation owns is not: its next turn is worth waiting for.
 */
export class HotPrefixes {
  private readonly seen = new Map<string, number[]>();
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

  add(key: string, now = Date.now()): void {
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

  private sweep(now: number, full: boolean): void {
    this.sweepAt = now + this.windowMs;
    const from = now - this.windowMs;
    for (const [k, ts] of this.seen) if (ts.length === 0 || ts.at(-1)! < from) this.seen.delete(k);
    // Still full of live keys: drop the oldest inserted (Map order) to stay bounded.
    if (full) for (const k of this.seen.keys()) {
      if (this.seen.size < this.maxKeys) break;
      this.seen.delete(k);
    }
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

/** Reading the router's /metrics text: sums over label sets, histogram buckets, quantiles from bucket deltas. Pure. */

/** Sum of every sample of `name` (all label sets) whose labels contain `match`. */
export function sumOf(text: string, name: string, match = ''): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const c = line.charCodeAt(name.length);
    if (c !== 123 /* { */ && c !== 32 /* space */) continue;
    if (match && !line.includes(match)) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) total += v;
  }
  return total;
}

/** Cumulative bucket counts of histogram `name` by upper bound (le), label sets merged. */
export function bucketsOf(text: string, name: string): Map<number, number> {
  const out = new Map<number, number>();
  const prefix = `${name}_bucket{`;
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const m = /le="([^"]+)"/.exec(line);
    if (!m) continue;
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    out.set(le, (out.get(le) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}

export interface BucketQuantile {
  /** Observations in the window. */
  count: number;
  /** Linear interpolation inside the bucket holding the quantile (seconds). */
  estimate: number;
  /** That bucket's upper bound: the quantile is at most this (seconds; Infinity past the last bound). */
  upperBound: number;
  /** Share of observations at or under 1 ms. */
  shareUnder1ms: number;
}

/** The q-quantile of the observations between two scrapes of the same histogram. */
export function quantileBetween(before: Map<number, number>, after: Map<number, number>, q: number): BucketQuantile {
  const les = [...after.keys()].sort((a, b) => a - b);
  const cum = les.map((le) => (after.get(le) ?? 0) - (before.get(le) ?? 0));
  const count = cum[cum.length - 1] ?? 0;
  const at1ms = les.findIndex((le) => le >= 1e-3);
  const shareUnder1ms = count > 0 && at1ms >= 0 ? cum[at1ms]! / count : NaN;
  if (count === 0) return { count, estimate: NaN, upperBound: NaN, shareUnder1ms };
  const rank = q * count;
  for (let i = 0; i < les.length; i++) {
    if (cum[i]! < rank) continue;
    const lo = i === 0 ? 0 : les[i - 1]!;
    const hi = les[i]!;
    const below = i === 0 ? 0 : cum[i - 1]!;
    const inBucket = cum[i]! - below;
    const estimate = hi === Infinity ? lo : lo + ((hi - lo) * (rank - below)) / Math.max(1, inBucket);
    return { count, estimate, upperBound: hi, shareUnder1ms };
  }
  return { count, estimate: NaN, upperBound: Infinity, shareUnder1ms };
}

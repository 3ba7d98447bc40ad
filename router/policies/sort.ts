/**
 * Stable sorts of candidate indices by numeric keys, without a comparator call per comparison
 * (Array.prototype.sort calls back into JS every time: at 512 candidates that was most of a
 * decision). For finite keys the result is exactly what a stable sort with the comparator
 * `k1[a] - k1[b] || k2[a] - k2[b] || k3[a] - k3[b]` gives: for finite doubles the sign of a
 * difference is the order of the two values, so the comparator is a total preorder, and a stable
 * sort by a total preorder has one answer. Callers check `allFinite` first and keep the comparator
 * sort otherwise (NaN or infinite keys make the comparator inconsistent: then only the original
 * algorithm reproduces the original order).
 */

/** Whether every key in [0, n) is a finite number. */
export function allFinite(k: Float64Array, n = k.length): boolean {
  for (let i = 0; i < n; i++) if (!Number.isFinite(k[i]!)) return false;
  return true;
}

/** a after b: a's keys are lexicographically greater (k2, k3 may be null: no such key). */
function after(a: number, b: number, k1: Float64Array, k2: Float64Array | null, k3: Float64Array | null): boolean {
  const x = k1[a]!;
  const y = k1[b]!;
  if (x !== y) return x > y;
  if (k2 === null) return false;
  const x2 = k2[a]!;
  const y2 = k2[b]!;
  if (x2 !== y2) return x2 > y2;
  return k3 !== null && k3[a]! > k3[b]!;
}

const RUN = 12;

/**
 * Sorts idx[from, to) in place by (k1, k2, k3) of each index, ascending, equal keys keeping their
 * order: insertion sort of short runs, then bottom-up merges through `tmp` (at least `to` long).
 */
export function stableSortIndices(
  idx: Int32Array,
  from: number,
  to: number,
  k1: Float64Array,
  k2: Float64Array | null = null,
  k3: Float64Array | null = null,
  tmp: Int32Array = new Int32Array(idx.length),
): void {
  if (k2 === null) return sortByOneKey(idx, from, to, k1, tmp);
  for (let lo = from; lo < to; lo += RUN) {
    const hi = Math.min(lo + RUN, to);
    for (let i = lo + 1; i < hi; i++) {
      const v = idx[i]!;
      let j = i - 1;
      while (j >= lo && after(idx[j]!, v, k1, k2, k3)) {
        idx[j + 1] = idx[j]!;
        j--;
      }
      idx[j + 1] = v;
    }
  }
  let src = idx;
  let dst = tmp;
  for (let width = RUN; width < to - from; width *= 2) {
    for (let lo = from; lo < to; lo += 2 * width) {
      const mid = Math.min(lo + width, to);
      const hi = Math.min(lo + 2 * width, to);
      let i = lo;
      let j = mid;
      let o = lo;
      // Take from the right run only when strictly before the left: equal keys keep their order.
      while (i < mid && j < hi) dst[o++] = after(src[i]!, src[j]!, k1, k2, k3) ? src[j++]! : src[i++]!;
      while (i < mid) dst[o++] = src[i++]!;
      while (j < hi) dst[o++] = src[j++]!;
    }
    const t = src;
    src = dst;
    dst = t;
  }
  if (src !== idx) idx.set(src.subarray(from, to), from);
}

/** stableSortIndices with one key, its comparisons written out. */
function sortByOneKey(idx: Int32Array, from: number, to: number, k: Float64Array, tmp: Int32Array): void {
  for (let lo = from; lo < to; lo += RUN) {
    const hi = Math.min(lo + RUN, to);
    for (let i = lo + 1; i < hi; i++) {
      const v = idx[i]!;
      const kv = k[v]!;
      let j = i - 1;
      while (j >= lo && k[idx[j]!]! > kv) {
        idx[j + 1] = idx[j]!;
        j--;
      }
      idx[j + 1] = v;
    }
  }
  let src = idx;
  let dst = tmp;
  for (let width = RUN; width < to - from; width *= 2) {
    for (let lo = from; lo < to; lo += 2 * width) {
      const mid = Math.min(lo + width, to);
      const hi = Math.min(lo + 2 * width, to);
      let i = lo;
      let j = mid;
      let o = lo;
      while (i < mid && j < hi) {
        const a = src[i]!;
        const b = src[j]!;
        if (k[a]! > k[b]!) {
          dst[o++] = b;
          j++;
        } else {
          dst[o++] = a;
          i++;
        }
      }
      while (i < mid) dst[o++] = src[i++]!;
      while (j < hi) dst[o++] = src[j++]!;
    }
    const t = src;
    src = dst;
    dst = t;
  }
  if (src !== idx) idx.set(src.subarray(from, to), from);
}


import type { SamplingParams } from './engine.js';

/** Weights below e^-30 of the top token are treated as zero (their total is < 1e-7 of it over any vocabulary here). */
const MIN_LOG_WEIGHT = -30;

/**
 * Picks the next token from one row of logits: greedy at temperature 0, otherwise
 * temperature + top-p (nucleus) sampling. The random draw is a pure function of
 * (seed, position), so a seeded sequence needs no per-sequence state and replays exactly.
 */
export function sampleToken(logits: ArrayLike<number>, params: SamplingParams, position: number): number {
  if (!(params.temperature > 0)) return argmax(logits);
  const u = params.seed === null ? Math.random() : seededUniform(params.seed, position);
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  const invT = 1 / params.temperature;
  const w = new Float64Array(n);
  let total = 0;
  let live = 0;
  for (let i = 0; i < n; i++) {
    const z = (logits[i] - max) * invT;
    if (z > MIN_LOG_WEIGHT) {
      total += w[i] = Math.exp(z);
      live++;
    }
  }

  // Nucleus: the smallest weight `cutoff` such that tokens weighing at least that much
  // hold topP of the mass (ties at the cutoff are all kept).
  let cutoff = 0;
  if (params.topP < 1) {
    const sorted = new Float64Array(live);
    for (let i = 0, j = 0; i < n; i++) if (w[i] > 0) sorted[j++] = w[i];
    sorted.sort(); // native numeric sort, ascending
    const need = Math.max(params.topP, 0) * total;
    let cum = 0;
    for (let j = live - 1; j >= 0; j--) {
      cum += sorted[j];
      cutoff = sorted[j];
      if (cum >= need) break;
    }
    total = 0;
    for (let i = 0; i < n; i++) if (w[i] >= cutoff) total += w[i];
  }

  const target = u * total;
  let cum = 0;
  let last = 0;
  for (let i = 0; i < n; i++) {
    if (w[i] > 0 && w[i] >= cutoff) {
      cum += w[i];
      last = i;
      if (target < cum) return i;
    }
  }
  return last;
}

export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** A uniform number in [0, 1) from (seed, position): splitmix64-style mixing. */
export function seededUniform(seed: number, position: number): number {
  const M = 0xffffffffffffffffn;
  let x = (BigInt.asUintN(64, BigInt(Math.trunc(seed))) * 0x9e3779b97f4a7c15n + BigInt(position) + 1n) & M;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M;
  x ^= x >> 31n;
  return Number(x >> 11n) / 2 ** 53;
}

/**
 * Robust ridge regression over a sliding window of observations: y ≈ θ·x. Each fit solves
 *   min Σ wᵢ (yᵢ − θ·xᵢ)² + Σⱼ ridgeⱼ (θⱼ − priorⱼ)²
 * with Huber weights from the residuals of the previous fit, three times over (a request that hit
 * a stall or a mispredicted cache counts little); θ is clamped to fixed bounds. The ridge
 * keeps a parameter the data does not excite at its prior, and the window forgets old behaviour.
 * Pure state in, state out: no clocks, no randomness. 5×5 at most: solving per observation is cheap.
 */
export interface FitState {
  theta: number[];
  xs: number[][];
  ys: number[];
  samples: number;
}

export interface FitOptions {
  prior: number[];
  /** Strength pulling each parameter to its prior (in units of y² per unit of θ²). */
  ridge: number[];
  lower: number[];
  upper: number[];
  /** Observations kept. */
  window: number;
}

export function fitInit(o: FitOptions): FitState {
  return { theta: [...o.prior], xs: [], ys: [], samples: 0 };
}

export function fitPredict(s: FitState, x: number[]): number {
  let y = 0;
  for (let i = 0; i < x.length; i++) y += s.theta[i]! * x[i]!;
  return y;
}

export function fitUpdate(s: FitState, x: number[], y: number, o: FitOptions): FitState {
  if (!Number.isFinite(y) || x.some((v) => !Number.isFinite(v))) return s;
  const xs = [...s.xs, x];
  const ys = [...s.ys, y];
  if (xs.length > o.window) {
    xs.shift();
    ys.shift();
  }
  // Iteratively reweighted from the previous fit: an outlier far from it weighs little from the start.
  let theta = s.theta;
  for (let it = 0; it < 3; it++) {
    const res = xs.map((xi, i) => Math.abs(ys[i]! - dot(theta, xi)));
    const k = 2.5 * Math.max(1.4826 * median(res), 1e-9);
    const weights = res.map((r) => (r <= k ? 1 : k / r));
    theta = solve(xs, ys, weights, o).map((t, i) => Math.max(o.lower[i]!, Math.min(o.upper[i]!, t)));
  }
  return { theta, xs, ys, samples: s.samples + 1 };
}

function solve(xs: number[][], ys: number[], w: number[], o: FitOptions): number[] {
  const n = o.prior.length;
  const a: number[][] = Array.from({ length: n }, (_, i) => Array.from({ length: n + 1 }, (_, j) => (j === i ? o.ridge[i]! : j === n ? o.ridge[i]! * o.prior[i]! : 0)));
  for (let r = 0; r < xs.length; r++) {
    const x = xs[r]!;
    for (let i = 0; i < n; i++) {
      const wx = w[r]! * x[i]!;
      if (wx === 0) continue;
      for (let j = 0; j < n; j++) a[i]![j]! += wx * x[j]!;
      a[i]![n]! += wx * ys[r]!;
    }
  }
  // Gaussian elimination with partial pivoting (the ridge keeps the matrix positive definite).
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[p]![c]!)) p = r;
    [a[c], a[p]] = [a[p]!, a[c]!];
    const piv = a[c]![c]!;
    if (Math.abs(piv) < 1e-12) return [...o.prior];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r]![c]! / piv;
      if (f === 0) continue;
      for (let j = c; j <= n; j++) a[r]![j]! -= f * a[c]![j]!;
    }
  }
  return a.map((row, i) => row[n]! / row[i]!);
}

const dot = (t: number[], x: number[]) => t.reduce((s, v, i) => s + v * x[i]!, 0);

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)]!;
}

/**
 * Recursive least squares with forgetting, robust to outliers: the residual is clamped to a few
 * times its running mean magnitude (or the prediction, if larger) (a request that hit a stall or a mispredicted cache does not
 * drag the fit), the parameters to fixed bounds, and the covariance to a maximum trace (no
 * wind-up while the inputs do not vary). Pure state in, state out: no clocks, no randomness.
 */
export interface RlsState {
  theta: number[];
  /** Covariance, row-major n×n. */
  p: number[];
  /** Running mean of |residual| (the clamp's scale). */
  scale: number;
  samples: number;
}

export interface RlsOptions {
  /** Forgetting factor in (0, 1]: 1 never forgets. */
  forgetting: number;
  lower: number[];
  upper: number[];
  /** Initial variance of each parameter (how far the prior may move). */
  priorVariance: number[];
  /** Residuals beyond this many running mean magnitudes are clamped. */
  clampAt: number;
  /** Floor of the clamp's scale (units of y). */
  minScale: number;
}

export function rlsInit(prior: number[], o: RlsOptions): RlsState {
  const n = prior.length;
  const p = new Array<number>(n * n).fill(0);
  for (let i = 0; i < n; i++) p[i * n + i] = o.priorVariance[i]!;
  return { theta: [...prior], p, scale: o.minScale, samples: 0 };
}

export function rlsPredict(s: RlsState, x: number[]): number {
  let y = 0;
  for (let i = 0; i < x.length; i++) y += s.theta[i]! * x[i]!;
  return y;
}

export function rlsUpdate(s: RlsState, x: number[], y: number, o: RlsOptions): RlsState {
  const n = x.length;
  if (!Number.isFinite(y) || x.some((v) => !Number.isFinite(v))) return s;
  const pred = rlsPredict(s, x);
  const raw = y - pred;
  // A residual as large as the prediction itself always counts (the prior may be far off).
  const lim = Math.max(o.clampAt * Math.max(s.scale, o.minScale), Math.abs(pred));
  const e = Math.max(-lim, Math.min(lim, raw));
  const px = new Array<number>(n).fill(0);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) px[i] += s.p[i * n + j]! * x[j]!;
  let denom = o.forgetting;
  for (let i = 0; i < n; i++) denom += x[i]! * px[i]!;
  const k = px.map((v) => v / denom);
  const theta = s.theta.map((t, i) => Math.max(o.lower[i]!, Math.min(o.upper[i]!, t + k[i]! * e)));
  const p = new Array<number>(n * n);
  let trace = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) p[i * n + j] = (s.p[i * n + j]! - k[i]! * px[j]!) / o.forgetting;
    trace += p[i * n + i]!;
  }
  let maxTrace = 0;
  for (const v of o.priorVariance) maxTrace += v;
  if (trace > maxTrace) for (let i = 0; i < p.length; i++) p[i] = p[i]! * (maxTrace / trace);
  // The scale follows |residual| slowly (an EWMA), so one outlier widens the clamp only a little.
  const scale = 0.9 * s.scale + 0.1 * Math.min(Math.abs(raw), 2 * lim);
  return { theta, p, scale, samples: s.samples + 1 };
}

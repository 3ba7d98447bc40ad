import type { Scored } from '../policies/policy.js';
import { fitInit, fitPredict, fitUpdate, type FitOptions, type FitState } from './fit.js';

/**
 * Each worker's speed, learned online from what the router sees of its requests:
 *  - time to first token ≈ overhead + ms_per_ktok × own uncached tokens (thousands)
 *    + ms_per_ktok_ahead × prefill tokens queued ahead (thousands) + ms_per_running × requests decoding there (they share every step)
 *    + ms_per_waiting × requests there still before their first token;
 *  - inter-token gap ≈ decode_step_ms + decode_ms_per_seq × batch size.
 * A robust ridge fit per worker over its last `window` observations (router/cost/fit.ts), pulled to the prior;
 * the prior is what the cost uses until min_samples observations arrived. A worker with an
 * explicit override uses those numbers and learns nothing.
 */
export interface RatePrior {
  prefill_tokens_per_s: number;
  overhead_ms: number;
  ms_per_running_request: number;
  ms_per_waiting_request: number;
  decode_step_ms: number;
  decode_ms_per_sequence: number;
}

export interface RateSettings {
  prior: RatePrior;
  /** Observations before a worker's learned rates replace the prior. */
  min_samples: number;
  /** Observations per worker the fit keeps (older ones are forgotten). */
  window: number;
  /** How far (0..1) each worker's learned rates are pulled to the fleet's median. */
  fleet_pooling: number;
  /** Fixed rates by worker id (fields left out come from the prior). */
  workers: Record<string, Partial<RatePrior>>;
}

/** What the TTFT model reads. */
export interface WorkerRates {
  /** Prefill time of 1000 of its own uncached tokens. */
  msPerKtok: number;
  /** Wait per 1000 prefill tokens queued ahead of it. */
  msPerKtokAhead: number;
  overheadMs: number;
  /** Extra time to first token per request already decoding there. */
  msPerRunning: number;
  /** Extra time to first token per request waiting there beyond its queued prefill tokens (scheduling, batch slots). */
  msPerWaiting: number;
  decodeStepMs: number;
  decodeMsPerSeq: number;
  /** Where the numbers come from. */
  basis: 'prior' | 'fleet' | 'learned' | 'override';
  ttftSamples: number;
  itlSamples: number;
}

/** One TTFT observation: what the request met when it was sent, and how long the first token took. */
export interface TtftObservation {
  uncachedTokens: number;
  aheadTokens: number;
  runningDecodes: number;
  /** Requests there still waiting for their first token (a full batch makes each wait for a slot). */
  waitingRequests?: number;
  ttftMs: number;
}

/** Timing of one attempt (the pipeline's hook). */
export interface AttemptTiming {
  firstByte(status: number): void;
  /** A chunk after the first; `batch`: requests decoding on the worker now. */
  progress(batch: number): void;
}

/** Each parameter's prior standard deviation: the ridge is (noise / sd)², so data moves a parameter it excites, and one it does not stays at its prior. */
const NOISE_MS = 20;
const ridgeOf = (sd: number[]) => sd.map((v) => (NOISE_MS / v) ** 2);

const TTFT_OPTS = (p: RatePrior, window: number): FitOptions => {
  const k = 1e6 / p.prefill_tokens_per_s;
  return {
    prior: [p.overhead_ms, k, p.ms_per_running_request, p.ms_per_waiting_request, k],
    ridge: ridgeOf([500, 10 * k, 50, 200, 10 * k]),
    // Own prefill rate kept within 20× of the prior either way: cached-heavy traffic (few own
    // tokens) must not let it collapse to nothing, which would make the cost cache-blind.
    lower: [0, k / 20, 0, 0, 0],
    upper: [60_000, k * 20, 10_000, 60_000, k * 20],
    window,
  };
};
const ITL_OPTS = (p: RatePrior, window: number): FitOptions => ({
  prior: [p.decode_step_ms, p.decode_ms_per_sequence],
  ridge: ridgeOf([50, 5]),
  lower: [0, 0],
  upper: [60_000, 10_000],
  window,
});

/** Own uncached and queued-ahead tokens apart: the queue count is the noisier one (its requests may be partly done). */
const ttftX = (o: Omit<TtftObservation, 'ttftMs'>) => [1, o.uncachedTokens / 1000, o.runningDecodes, o.waitingRequests ?? 0, o.aheadTokens / 1000];

type FleetFit = Pick<WorkerRates, 'overheadMs' | 'msPerKtok' | 'msPerKtokAhead' | 'msPerRunning' | 'msPerWaiting'>;

interface PerSource {
  ttft: FitState;
  itl: FitState;
}

export class RateLearner {
  private readonly per = new Map<string, PerSource>();
  private readonly ttftOpts: FitOptions;
  private readonly itlOpts: FitOptions;
  private fleet: FleetFit | null | undefined;
  /** Each worker's speed against the fleet fit (speedOf), valid until the next observation. */
  private readonly speeds = new Map<string, number>();
  private rev = 0;

  constructor(
    private readonly s: RateSettings,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.ttftOpts = TTFT_OPTS(s.prior, s.window);
    this.itlOpts = ITL_OPTS(s.prior, s.window);
  }

  /**
   * The rates the cost uses for `source` (`workerId:rank`): between its own fit and the fleet's
   * median fit scaled by the worker's speed (`fleet_pooling` of the way to the latter). The speed
   * is one number per worker, the median of measured / fleet-predicted TTFT over its window, shrunk
   * toward 1 while few are seen: a 5-parameter fit per worker is noisy (identical sims learned 11 to
   * 26 ms per 1k tokens on the Mooncake run, and the one that looked fast got the big prompts),
   * while a median ratio over 64 requests is stable, and a really faster worker still shows (0.5).
   * Every parameter by the same factor: two workers keep their order.
   */
  ratesOf(source: string): WorkerRates {
    const own = this.learnedOf(source);
    if (own.basis === 'override') return own;
    const fleet = this.fleetMedian();
    if (!fleet) return own;
    // Not enough seen yet: the fleet's median is a better prior than the configured one (a worker
    // still at the configured prior next to learned ones would look faster or slower by mistake).
    if (own.ttftSamples < this.s.min_samples) return { ...own, ...fleet, basis: 'fleet' };
    const a = this.s.fleet_pooling;
    const k = this.speedOf(source, fleet);
    const mix = (x: number, m: number) => (1 - a) * x + a * m * k;
    return {
      ...own,
      overheadMs: mix(own.overheadMs, fleet.overheadMs),
      msPerKtok: mix(own.msPerKtok, fleet.msPerKtok),
      msPerKtokAhead: mix(own.msPerKtokAhead, fleet.msPerKtokAhead),
      msPerRunning: mix(own.msPerRunning, fleet.msPerRunning),
      msPerWaiting: mix(own.msPerWaiting, fleet.msPerWaiting),
    };
  }

  /** Measured over fleet-predicted TTFT for this worker: the median ratio, shrunk toward 1 by min_samples pseudo-observations (cached until the next observation). */
  private speedOf(source: string, fleet: FleetFit): number {
    const hit = this.speeds.get(source);
    if (hit !== undefined) return hit;
    const st = this.per.get(source);
    const theta = [fleet.overheadMs, fleet.msPerKtok, fleet.msPerRunning, fleet.msPerWaiting, fleet.msPerKtokAhead];
    const logs: number[] = [];
    for (let i = 0; st && i < st.ttft.xs.length; i++) {
      const x = st.ttft.xs[i]!;
      let pred = 0;
      for (let j = 0; j < theta.length; j++) pred += theta[j]! * x[j]!;
      const y = st.ttft.ys[i]!;
      if (pred > 0 && y > 0) logs.push(Math.log(y / pred));
    }
    let k = 1;
    if (logs.length > 0) {
      logs.sort((x, y) => x - y);
      const m = logs.length % 2 ? logs[(logs.length - 1) / 2]! : (logs[logs.length / 2 - 1]! + logs[logs.length / 2]!) / 2;
      k = Math.exp((m * logs.length) / (logs.length + this.s.min_samples));
    }
    this.speeds.set(source, k);
    return k;
  }

  /** The worker's own fit (or its override, or the prior before min_samples), not pooled. */
  learnedOf(source: string): WorkerRates {
    const workerId = source.slice(0, source.lastIndexOf(':'));
    const o = this.s.workers[workerId] ?? this.s.workers[source];
    if (o) return fromPrior({ ...this.s.prior, ...o }, 'override', this.per.get(source));
    const st = this.per.get(source);
    const ttftLearned = st !== undefined && st.ttft.samples >= this.s.min_samples;
    const itlLearned = st !== undefined && st.itl.samples >= this.s.min_samples;
    const r = fromPrior(this.s.prior, ttftLearned || itlLearned ? 'learned' : 'prior', st);
    if (ttftLearned) [r.overheadMs, r.msPerKtok, r.msPerRunning, r.msPerWaiting, r.msPerKtokAhead] = st.ttft.theta as [number, number, number, number, number];
    if (itlLearned) [r.decodeStepMs, r.decodeMsPerSeq] = st.itl.theta as [number, number];
    return r;
  }

  /** Per-parameter median of the learned (not overridden) workers' TTFT fits; cached until the next observation. */
  private fleetMedian(): FleetFit | null {
    if (this.fleet !== undefined) return this.fleet;
    const fits = [...this.per.keys()].map((k) => this.learnedOf(k)).filter((r) => r.basis === 'learned' && r.ttftSamples >= this.s.min_samples);
    const med = (f: (r: WorkerRates) => number) => {
      const v = fits.map(f).sort((x, y) => x - y);
      return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
    };
    this.fleet = fits.length === 0 ? null : {
      overheadMs: med((r) => r.overheadMs),
      msPerKtok: med((r) => r.msPerKtok),
      msPerKtokAhead: med((r) => r.msPerKtokAhead),
      msPerRunning: med((r) => r.msPerRunning),
      msPerWaiting: med((r) => r.msPerWaiting),
    };
    return this.fleet;
  }

  /** Changes whenever an answer of ratesOf may change (an observation, a forgotten worker): callers may cache until then. */
  get revision(): number {
    return this.rev;
  }

  observeTtft(source: string, o: TtftObservation): void {
    this.rev++;
    const st = this.state(source);
    this.fleet = undefined;
    this.speeds.clear();
    st.ttft = fitUpdate(st.ttft, ttftX(o), o.ttftMs, this.ttftOpts);
  }

  observeGap(source: string, batch: number, gapMs: number): void {
    this.rev++;
    const st = this.state(source);
    st.itl = fitUpdate(st.itl, [1, Math.max(1, batch)], gapMs, this.itlOpts);
  }

  /** What the learned fit (prior included) predicts, whatever the sample count (calibration, tests). */
  fittedTtftMs(source: string, o: Omit<TtftObservation, 'ttftMs'>): number {
    return fitPredict(this.state(source).ttft, ttftX(o));
  }

  /**
   * The pipeline's hook for one attempt. Streamed requests only (a non-streamed first byte is the
   * whole answer); `firstChunkIsRole`: chat streams open with a role chunk before any token, so the
   * first token is the next chunk.
   */
  begin(s: Scored, opts: { stream: boolean; firstChunkIsRole: boolean }): AttemptTiming | null {
    if (!opts.stream) return null;
    const source = s.candidate.source;
    const obs: Omit<TtftObservation, 'ttftMs'> = {
      uncachedTokens: Math.max(0, s.promptTokens - s.matchedTokens),
      aheadTokens: s.terms.ahead_tokens ?? s.candidate.load.pendingPrefillTokens,
      runningDecodes: s.candidate.load.activeDecodes,
      waitingRequests: Math.max(0, s.candidate.load.inFlight - s.candidate.load.activeDecodes),
    };
    const t0 = this.now();
    let ok = false;
    let firstTokenAt: number | null = null;
    let last = 0;
    const token = (at: number) => {
      firstTokenAt = at;
      last = at;
      this.observeTtft(source, { ...obs, ttftMs: at - t0 });
    };
    return {
      firstByte: (status) => {
        ok = status >= 200 && status < 300;
        if (ok && !opts.firstChunkIsRole) token(this.now());
      },
      progress: (batch) => {
        if (!ok) return;
        const at = this.now();
        if (firstTokenAt === null) return token(at);
        this.observeGap(source, batch, at - last);
        last = at;
      },
    };
  }

  forget(source: string): void {
    this.rev++;
    this.per.delete(source);
    this.fleet = undefined;
    this.speeds.clear();
  }

  /** Every source's rates (GET-able snapshot, tests). */
  snapshot(): Record<string, WorkerRates> {
    const out: Record<string, WorkerRates> = {};
    for (const k of this.per.keys()) out[k] = this.ratesOf(k);
    return out;
  }

  private state(source: string): PerSource {
    let st = this.per.get(source);
    if (!st) {
      st = { ttft: fitInit(this.ttftOpts), itl: fitInit(this.itlOpts) };
      this.per.set(source, st);
    }
    return st;
  }
}

function fromPrior(p: RatePrior, basis: WorkerRates['basis'], st: PerSource | undefined): WorkerRates {
  return {
    msPerKtok: 1e6 / p.prefill_tokens_per_s,
    msPerKtokAhead: 1e6 / p.prefill_tokens_per_s,
    overheadMs: p.overhead_ms,
    msPerRunning: p.ms_per_running_request,
    msPerWaiting: p.ms_per_waiting_request,
    decodeStepMs: p.decode_step_ms,
    decodeMsPerSeq: p.decode_ms_per_sequence,
    basis,
    ttftSamples: st?.ttft.samples ?? 0,
    itlSamples: st?.itl.samples ?? 0,
  };
}

/** The learner a policy carries, if any (the pipeline feeds it). */
export function rateLearnerOf(policy: object): RateLearner | null {
  const r = (policy as { rates?: unknown }).rates;
  return r instanceof RateLearner ? r : null;
}

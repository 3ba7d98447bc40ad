/**
 * Prediction accuracy, per worker, over a sliding window: what the router predicted the chosen
 * worker had cached against what the worker then reported (usage.prompt_tokens_details.cached_tokens).
 *
 * The window: a worker's last WINDOW_REQUESTS answered requests that reported usage, none older than
 * WINDOW_MS. Over it,
 *   accuracy = Σ min(actual, predicted) / Σ predicted
 * the share of the predicted cached tokens the worker really had (1: every predicted hit was real;
 * hits beyond the prediction do not make up for missed ones). Null while Σ predicted is 0.
 *
 * When accuracy < WARN_BELOW after at least WARN_AFTER requests with predicted > 0, the worker gets
 * a warning (logged once per episode, shown in /workers) naming the likely cause from the evidence.
 */

export const WINDOW_REQUESTS = 200;
export const WINDOW_MS = 5 * 60_000;
export const WARN_BELOW = 0.8;
export const WARN_AFTER = 20;

export interface Sample {
  at: number;
  predicted: number;
  actual: number;
  /** The request carried cache_salt. */
  salted: boolean;
}

export interface WindowSummary {
  /** Requests in the window (each reported usage). */
  requests: number;
  /** Of them, those with predicted > 0. */
  predictedRequests: number;
  predicted: number;
  actual: number;
  /** Σ min(actual, predicted). */
  confirmed: number;
  /** Predicted tokens not confirmed, on requests with cache_salt. */
  missedSalted: number;
  accuracy: number | null;
}

/** A worker's window of samples, oldest first. */
export class AccuracyWindow {
  private samples: Sample[] = [];

  constructor(private readonly maxRequests = WINDOW_REQUESTS, private readonly maxAgeMs = WINDOW_MS) {}

  add(s: Sample): void {
    this.samples.push(s);
    if (this.samples.length > this.maxRequests) this.samples.shift();
  }

  summary(now: number): WindowSummary {
    while (this.samples.length > 0 && now - this.samples[0]!.at > this.maxAgeMs) this.samples.shift();
    return summarize(this.samples);
  }
}

export function summarize(samples: readonly Sample[]): WindowSummary {
  let predicted = 0;
  let actual = 0;
  let confirmed = 0;
  let missedSalted = 0;
  let predictedRequests = 0;
  for (const s of samples) {
    predicted += s.predicted;
    actual += s.actual;
    const c = Math.min(s.actual, s.predicted);
    confirmed += c;
    if (s.salted) missedSalted += s.predicted - c;
    if (s.predicted > 0) predictedRequests++;
  }
  return { requests: samples.length, predictedRequests, predicted, actual, confirmed, missedSalted, accuracy: predicted > 0 ? confirmed / predicted : null };
}

/** What the router knows of a worker that can explain missed predictions. */
export interface Evidence {
  /** Per rank stream: silent verdict or untrusted. */
  streams: { source: string; trusted: boolean; silent: string | null }[];
  /** Block size the router was configured with for the worker. */
  configuredBlockSize: number;
  /** Block sizes seen in its BlockStored events (null: none seen yet), per rank. */
  eventBlockSizes: (number | null)[];
  /** The tokenization parity check's last mismatch for this worker, if any. */
  parityMismatch: string | null;
}

/**
 * The warning for a worker whose predictions fall short, with the likely cause; null when they do
 * not (or too few requests to say). Pure. Causes in order of how surely they explain it.
 */
export function accuracyVerdict(w: WindowSummary, e: Evidence, o: { below: number; after: number } = { below: WARN_BELOW, after: WARN_AFTER }): string | null {
  if (w.accuracy === null || w.predictedRequests < o.after || w.accuracy >= o.below) return null;
  const head = `prediction accuracy ${(w.accuracy * 100).toFixed(0)}% over ${w.requests} requests (predicted ${w.predicted} cached tokens, worker reported ${w.actual})`;
  const silent = e.streams.find((s) => s.silent !== null);
  if (silent) return `${head}: KV events are not flowing: ${silent.source}: ${silent.silent}`;
  const untrusted = e.streams.find((s) => !s.trusted);
  if (untrusted) return `${head}: KV events are not flowing: the stream of ${untrusted.source} is not trusted (gap, reset or not connected); see /workers events`;
  const other = e.eventBlockSizes.find((b) => b !== null && b !== e.configuredBlockSize);
  if (other !== undefined) return `${head}: block size mismatch: the router is configured with block_size ${e.configuredBlockSize}, the worker's events have ${other}`;
  if (e.parityMismatch !== null) return `${head}: different tokenizer or chat template: ${e.parityMismatch}`;
  const missed = w.predicted - w.confirmed;
  if (missed > 0 && w.missedSalted / missed >= 0.5) return `${head}: cache_salt: ${Math.round((w.missedSalted / missed) * 100)}% of the missed tokens were on requests with cache_salt; the worker may salt its block hashes differently (or not at all)`;
  return `${head}: cause unknown: events look healthy and tokenization matches; the worker may evict faster than its events say, or run without prefix caching`;
}

/** What /workers shows per worker. */
export interface PredictionView {
  predicted_cached_tokens: number;
  actual_cached_tokens: number;
  accuracy: number | null;
  requests: number;
  warning: string | null;
}

/** Every worker's window and warning; the thin stateful shell around the pure parts above. */
export class PredictionAccuracy {
  private readonly windows = new Map<string, AccuracyWindow>();
  private readonly warnings = new Map<string, string>();

  constructor(
    private readonly evidence: (worker: string) => Evidence | null,
    private readonly log: (msg: string) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  /** A request to `worker` ended with usage reported. */
  record(worker: string, s: Omit<Sample, 'at'>): void {
    let w = this.windows.get(worker);
    if (!w) this.windows.set(worker, (w = new AccuracyWindow()));
    w.add({ ...s, at: this.now() });
    this.evaluate(worker, w.summary(this.now()));
  }

  accuracy(worker: string): number | null {
    return this.windows.get(worker)?.summary(this.now()).accuracy ?? null;
  }

  view(worker: string): PredictionView {
    const s = this.windows.get(worker)?.summary(this.now()) ?? summarize([]);
    return { predicted_cached_tokens: s.predicted, actual_cached_tokens: s.actual, accuracy: s.accuracy, requests: s.requests, warning: this.warnings.get(worker) ?? null };
  }

  forget(worker: string): void {
    this.windows.delete(worker);
    this.warnings.delete(worker);
  }

  /** Logged when the warning starts; kept (and refreshed) while it holds; cleared when accuracy recovers. */
  private evaluate(worker: string, s: WindowSummary): void {
    const e = this.evidence(worker);
    const verdict = e ? accuracyVerdict(s, e) : null;
    if (verdict === null) {
      this.warnings.delete(worker);
      return;
    }
    if (!this.warnings.has(worker)) this.log(`worker ${worker}: ${verdict}`);
    this.warnings.set(worker, verdict);
  }
}

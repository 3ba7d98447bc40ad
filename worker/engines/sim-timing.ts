/**
 * How long the sim engine's step takes: a function of what the step computes.
 *
 * Default: a profile of a real engine on a real GPU. The linear layers (QKV and output
 * projections, gated MLP, norms, rotary, residual add: everything but attention) follow
 * Vidur's published profile of Meta-Llama-3-8B on one A100, tensor parallel 1
 * (microsoft/vidur, data/profiling/compute/a100/meta-llama/Meta-Llama-3-8B/mlp.csv, commit
 * 41ab8ab; per-layer CUDA times in ms, medians). Summing the per-layer columns
 * (input_layernorm, attn_pre_proj, attn_rope, attn_post_proj, post_attention_layernorm,
 * mlp_up_proj, mlp_act, mlp_down_proj, add) and multiplying by the 32 layers gives
 *     1 token: 0.303 ms/layer → 9.70 ms     512 tokens: 1.083 ms → 34.6 ms
 *     32768 tokens: 67.54 ms/layer → 2161 ms (0.0660 ms a token, 15,200 tokens/s)
 * so  linear(n) = max(9.70, 0.0660 × n) ms  (2% under the 512-token row): weight-bandwidth
 * bound up to ~150 tokens, compute bound beyond.
 *
 * Attention is NOT in that profile; it is added from two labelled assumptions (not
 * measurements), derived from Llama-3-8B's shape (32 layers, 32 query heads, 8 KV heads,
 * head dim 128, bf16) and the A100-80GB SXM datasheet (2,039 GB/s HBM, 312 TFLOP/s dense bf16):
 *   - reading the keys/values of every context token once per step: 131,072 bytes a token
 *     at the full 2,039 GB/s → 6.43e-5 ms a context token;
 *   - the attention matmuls of new tokens: 4 × 32 × 128 × 32 = 524,288 FLOPs per
 *     (new token, context token) pair at an assumed 50% of peak (156 TFLOP/s) → 3.36e-6 ms a pair.
 * Per-request overheads outside the GPU (sampling, scheduling, detokenization) are not modelled.
 *
 * Overrides: `prefillTokensPerS` / `decodeStepMs` (either one) switch to the older linear
 * model, step = prefill tokens / prefillTokensPerS + decodeStepMs × (1 + (batch − 1)/16), with
 * the one not given at its old default (20,000 tokens/s, 10 ms).
 * `speedFactor` divides every step time (2 = a GPU twice as fast).
 */

/** What one engine step computes, per sequence. */
export interface StepWork {
  /** Tokens computed now. */
  newTokens: number;
  /** Tokens already in the cache before them. */
  startPos: number;
}

export interface StepTimingOptions {
  /** Override (older model): prefill throughput in tokens/s. */
  prefillTokensPerS?: number | null;
  /** Override (older model): decode step at batch 1, in ms. */
  decodeStepMs?: number | null;
  /** Divides every step time; default 1. */
  speedFactor?: number;
}

/** Constants of the default model (see the header for where each comes from). */
export const PROFILE = {
  source: 'Vidur profile, Meta-Llama-3-8B linear layers, 1×A100, TP1 (microsoft/vidur data/profiling/compute/a100/meta-llama/Meta-Llama-3-8B/mlp.csv)',
  linearFloorMs: 9.7,
  linearMsPerToken: 0.066,
  /** Assumption: 131,072 KV bytes a token read at 2,039 GB/s. */
  kvReadMsPerContextToken: 131_072 / 2.039e9,
  /** Assumption: 524,288 FLOPs a (query, key) pair at 156 TFLOP/s. */
  attnMsPerPair: 524_288 / 1.56e11,
} as const;

/** The older model's defaults, used for an override flag that is not given. */
export const LEGACY_DEFAULTS = { prefillTokensPerS: 20_000, decodeStepMs: 10 } as const;

/** How much a legacy-model step slows down per extra sequence in the batch (1/16 of the batch-1 step each). */
const LEGACY_BATCH_SLOWDOWN = 1 / 16;

export type StepTimer = (work: readonly StepWork[]) => number;

/** A step-time function (ms) for these options. */
export function stepTimer(opts: StepTimingOptions = {}): StepTimer {
  const speed = opts.speedFactor ?? 1;
  if (!(speed > 0) || !Number.isFinite(speed)) throw new Error(`speed factor must be a positive number, got ${speed}`);
  const legacy = opts.prefillTokensPerS != null || opts.decodeStepMs != null;
  if (legacy) {
    const rate = opts.prefillTokensPerS ?? LEGACY_DEFAULTS.prefillTokensPerS;
    const decodeMs = opts.decodeStepMs ?? LEGACY_DEFAULTS.decodeStepMs;
    if (!(rate > 0)) throw new Error(`prefill tokens per second must be positive, got ${rate}`);
    if (!(decodeMs >= 0)) throw new Error(`decode step ms must be >= 0, got ${decodeMs}`);
    return (work) => {
      if (work.length === 0) return 0;
      let prefill = 0;
      for (const w of work) if (w.newTokens > 1) prefill += w.newTokens;
      const decode = decodeMs * (1 + (work.length - 1) * LEGACY_BATCH_SLOWDOWN);
      return ((prefill / rate) * 1000 + decode) / speed;
    };
  }
  return (work) => profileStepMs(work) / speed;
}

/** The default model's step time in ms, at speed factor 1. */
export function profileStepMs(work: readonly StepWork[]): number {
  if (work.length === 0) return 0;
  let tokens = 0;
  let context = 0;
  let pairs = 0;
  for (const { newTokens: n, startPos: p } of work) {
    tokens += n;
    context += p + n;
    // Causal attention: new token i (0-based) sees p + i + 1 keys.
    pairs += n * p + (n * (n + 1)) / 2;
  }
  const linear = Math.max(PROFILE.linearFloorMs, PROFILE.linearMsPerToken * tokens);
  return linear + context * PROFILE.kvReadMsPerContextToken + pairs * PROFILE.attnMsPerPair;
}

/**
 * A hit in a slower tier is not free: its blocks must be loaded back to the GPU before the
 * prefill can use them. The load time of a tier = its tokens / its transfer rate.
 *
 * Default rates, in tokens per second, for the fleet's reference model (Llama-3-8B: 2 (K, V)
 * × 32 layers × 8 KV heads × 128 dims × 2 bytes = 128 KiB of KV per token):
 * - GPU: already in place, free;
 * - CPU (vLLM's CPU offloading, LMCache's local CPU backend): PCIe 4.0 x16 at ~25 GB/s → ~190k tokens/s;
 * - DISK (local NVMe, ~5 GB/s) → ~38k tokens/s;
 * - any other medium name: as slow as DISK (unknown media are not trusted to be fast).
 * For comparison, prefill of the same model on an A100 runs ~15k tokens/s (worker/engines/sim-timing.ts),
 * so a CPU hit costs ~8% of recomputing it, a disk hit ~40%.
 * Overrides: `tiers` in the config (fleet-wide) and `workers[].tiers` (one worker); keys are medium
 * names as the engines send them (case-insensitive), values tokens per second.
 */
export type TierRates = Record<string, number>;

export const DEFAULT_TIER_TOKENS_PER_S: Readonly<TierRates> = { GPU: Infinity, CPU: 190_000, DISK: 38_000 };

/** Tiers the cost ignores: provisional marks are this router's own predictions, not loads. */
const NOT_A_TIER = new Set(['provisional']);

export function tierRate(medium: string, rates: Readonly<TierRates>): number {
  const want = medium.toUpperCase();
  for (const [k, v] of Object.entries(rates)) if (k.toUpperCase() === want) return v;
  return rates.DISK ?? DEFAULT_TIER_TOKENS_PER_S.DISK!;
}

/** Milliseconds to load a match's tokens held outside the GPU, by tier (and their sum). */
export function tierLoadMs(byMedium: Readonly<Record<string, number>> | undefined, rates: Readonly<TierRates>): { total: number; byTier: Record<string, number> } {
  const byTier: Record<string, number> = {};
  let total = 0;
  if (!byMedium) return { total, byTier };
  for (const [medium, tokens] of Object.entries(byMedium)) {
    if (NOT_A_TIER.has(medium) || tokens <= 0) continue;
    const rate = tierRate(medium, rates);
    if (!Number.isFinite(rate)) continue;
    const ms = (tokens / rate) * 1000;
    byTier[medium] = ms;
    total += ms;
  }
  return { total, byTier };
}

/** The fleet's rates with a worker's overrides on top. */
export function ratesFor(fleet: Readonly<TierRates> | undefined, worker: Readonly<TierRates> | undefined): TierRates {
  return { ...DEFAULT_TIER_TOKENS_PER_S, ...(fleet ?? {}), ...(worker ?? {}) };
}

/** The part of the prefix index (src/index) the routing policies use: a structural type, so policies test alone. */
export interface MatchResult {
  matchedTokens: number;
  byMedium?: unknown;
}

/** A prompt's block keys (src/index PromptKeys), opaque to policies: computed once per request. */
export interface PromptKeysRef {
  readonly tokens: ArrayLike<number>;
  readonly blockSize: number;
}

/** One match read per source (src/index MatchView): what match() reports, without a result per source. */
export interface MatchViewRef {
  matchedTokens(source: string): number;
  /** A fresh record; undefined for a source the index does not know. */
  byMedium(source: string): Record<string, number> | undefined;
  provisionalTokens(source: string): number;
}

export interface MatchIndex {
  /** Given keys from promptKeys, their lora/salt apply; maxTokens bounds the hit (pass prompt length - 1, as vLLM). */
  match(
    prompt: ArrayLike<number> | PromptKeysRef,
    opts?: { lora?: string | null; salt?: string | null; maxTokens?: number },
  ): Map<string, MatchResult>;
  /** match() read per source (optional: test fakes need only match). */
  matchView?(prompt: ArrayLike<number> | PromptKeysRef, opts?: { lora?: string | null; salt?: string | null; maxTokens?: number }): MatchViewRef;
  markProvisional(source: string, tokenIds: number[] | PromptKeysRef, blockSize?: number, lora?: string | null, salt?: string | null): void;
  /** Optional so test fakes need not hash: the real index hashes the prompt once here. */
  promptKeys?(tokenIds: number[], blockSize: number, opts?: { lora?: string | null; salt?: string | null }): PromptKeysRef;
}

/** byMedium as a plain record for explain output, whatever shape the index gives (Map or object). */
export function mediumRecord(v: unknown): Record<string, number> | undefined {
  if (v === undefined || v === null) return undefined;
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, n]) => [String(k), Number(n)]));
  if (typeof v === 'object') return { ...(v as Record<string, number>) };
  return undefined;
}

/** Tokens matched only through provisional marks (the index reports them as the `provisional` tier). */
export function provisionalOf(v: unknown): number {
  const r = mediumRecord(v);
  return r?.provisional ?? 0;
}

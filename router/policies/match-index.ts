/** The part of the prefix index (src/index) the routing policies use: a structural type, so policies test alone. */
export interface MatchResult {
  matchedTokens: number;
  byMedium?: unknown;
}

export interface MatchOptions {
  lora?: string | null;
  /** cache_salt of the request: blocks stored under another salt (or none) never match. */
  salt?: string | null;
}

export interface MatchIndex {
  match(tokenIds: number[], opts?: MatchOptions): Map<string, MatchResult>;
  markProvisional(source: string, tokenIds: number[], blockSize: number, lora?: string | null, salt?: string | null): void;
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

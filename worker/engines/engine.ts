/**
 * What the scheduler asks of an engine, and nothing more.
 *
 * The scheduler owns the paged KV cache: it gives every sequence a block table
 * (physical block ids, `blockSize` tokens each, the last one possibly partial).
 * An engine keeps the keys/values of physical block `b` in its own pool, reads
 * positions [0, startPos) of a sequence through its block table, computes the
 * `newTokens` at positions [startPos, startPos + newTokens.length), writes their
 * keys/values into the same block table, and picks the next token.
 */
export interface SamplingParams {
  temperature: number;
  topP: number;
  /** Per-sequence RNG seed; equal seeds give equal samples. */
  seed: number | null;
}

export interface SequenceStep {
  seqId: string;
  /** Tokens to compute now: the uncached prompt suffix (prefill) or the last sampled token (decode). */
  newTokens: number[];
  /** Number of tokens before newTokens whose keys/values are already in the pool. */
  startPos: number;
  /** Physical block ids covering positions [0, startPos + newTokens.length). */
  blockTable: number[];
  sampling: SamplingParams;
  /** The LoRA adapter (by name) the sequence runs under; null or absent: the base model. */
  lora?: string | null;
}

export interface Engine {
  readonly kind: 'onnx' | 'sim';
  readonly blockSize: number;
  readonly numBlocks: number;
  /** Token ids that end generation (unless the request sets ignore_eos). */
  readonly eosTokenIds: number[];
  /** Runs one forward pass over every sequence (prefills and decodes may be mixed); returns the next token per sequence, in order. */
  step(seqs: SequenceStep[]): Promise<number[]>;
  /** Copies the keys/values of one physical block to another (copy-on-write of a shared partial block). */
  copyBlock?(src: number, dst: number): void;
  close(): Promise<void>;
}

import type { Engine, SamplingParams } from '../../worker/engines/engine.js';

export const GREEDY: SamplingParams = { temperature: 0, topP: 1, seed: null };

/** Hands out physical block ids like a scheduler would (no reuse; tests size the pool). */
export class BlockAllocator {
  private next = 0;
  constructor(private readonly numBlocks: number) {}
  take(n: number): number[] {
    if (this.next + n > this.numBlocks) throw new Error('test pool exhausted');
    return Array.from({ length: n }, () => this.next++);
  }
}

export interface Seq {
  id: string;
  tokens: number[];
  /** Positions whose keys/values are in the pool. */
  computed: number;
  blockTable: number[];
}

/** Grows the block table so it covers `len` positions. */
export function ensureBlocks(seq: Seq, len: number, alloc: BlockAllocator, blockSize: number): void {
  const need = Math.ceil(len / blockSize) - seq.blockTable.length;
  if (need > 0) seq.blockTable.push(...alloc.take(need));
}

/** Computes the uncached part of seq.tokens, then decodes greedily; returns the generated ids. */
export async function generate(
  engine: Engine,
  seq: Seq,
  maxTokens: number,
  alloc: BlockAllocator,
  sampling: SamplingParams = GREEDY,
): Promise<number[]> {
  const out: number[] = [];
  while (out.length < maxTokens) {
    const newTokens = seq.tokens.slice(seq.computed);
    ensureBlocks(seq, seq.tokens.length, alloc, engine.blockSize);
    const [next] = await engine.step([{ seqId: seq.id, newTokens, startPos: seq.computed, blockTable: seq.blockTable, sampling }]);
    seq.computed = seq.tokens.length;
    seq.tokens.push(next);
    out.push(next);
  }
  return out;
}

/** Deterministic pseudo-random token ids below `vocab`. */
export function randomTokens(n: number, seed: number, vocab = 150000): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % vocab;
  });
}

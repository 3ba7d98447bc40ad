import type { BlockHash, BlockRemoved, BlockStored, KVEvent, KVEventBatch } from '../../src/events/types.js';

/** mulberry32: small seeded PRNG so failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randInt(rnd: () => number, n: number): number {
  return Math.floor(rnd() * n);
}

export function stored(
  hashes: BlockHash[],
  parent: BlockHash | null,
  tokens: number[],
  blockSize: number,
  extra: Partial<Pick<BlockStored, 'lora_id' | 'lora_name' | 'medium'>> = {},
): BlockStored {
  return {
    type: 'BlockStored',
    block_hashes: hashes,
    parent_block_hash: parent,
    token_ids: tokens,
    block_size: blockSize,
    lora_id: extra.lora_id ?? null,
    medium: extra.medium ?? null,
    lora_name: extra.lora_name ?? null,
  };
}

export function removed(hashes: BlockHash[], medium: string | null = null): BlockRemoved {
  return { type: 'BlockRemoved', block_hashes: hashes, medium };
}

export function batch(...events: KVEvent[]): KVEventBatch {
  return { ts: 0, events, dp_rank: 0 };
}

/** [start, end) */
export function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

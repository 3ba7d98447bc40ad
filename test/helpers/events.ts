/** Small KV-event fixtures for tests and benches. */
import type { BlockStored, KVEvent } from '../../src/events/types.js';

/** One BlockStored of `tokens` tokens per block, hashes derived from `n`. */
export function stored(n: number, blocks = 1, tokens = 16): BlockStored {
  const block_hashes = Array.from({ length: blocks }, (_, i) => 0x9000000000000000n + BigInt(n) * 1000n + BigInt(i));
  const token_ids = Array.from({ length: blocks * tokens }, (_, i) => (n * 7 + i) % 50000);
  return { type: 'BlockStored', block_hashes, parent_block_hash: null, token_ids, block_size: tokens, lora_id: null, medium: 'GPU', lora_name: null };
}

export function batchOf(n: number, events = 1): KVEvent[] {
  return Array.from({ length: events }, (_, i) => stored(n * events + i));
}

/**
 * Synthetic fleet workload for the prefix-index benchmark, with realistic sharing:
 * conversations start with one of a few system prompts (shared by every source
 * that serves them), some conversations live on two sources, lengths vary up to
 * a full 8 192-token prompt. Tokens and engine hashes are pure functions of
 * (conversation, position), so nothing large is kept in memory.
 */
import type { BlockStored, BlockRemoved, KVEventBatch } from '../src/events/types.js';

export const BLOCK = 16;
export const PROMPT_BLOCKS = 512; // 8 192 tokens

export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

export class Workload {
  readonly systemPrompts: number;
  constructor(
    readonly seed: number,
    systemPrompts = 32,
  ) {
    this.systemPrompts = systemPrompts;
  }

  /** System prompt of a conversation and its length in blocks (8..128). */
  sys(conv: number): { id: number; blocks: number } {
    const id = mix32(conv * 3 + this.seed) % this.systemPrompts;
    return { id, blocks: 8 + (mix32(id + 1000 + this.seed) % 121) };
  }

  /** Stored length of a conversation in blocks: its system prompt plus 16..(512 - sys) own blocks. */
  length(conv: number): number {
    const s = this.sys(conv).blocks;
    return Math.min(PROMPT_BLOCKS, s + 16 + (mix32(conv * 7 + 1 + this.seed) % (PROMPT_BLOCKS - s)));
  }

  token(conv: number, pos: number): number {
    const s = this.sys(conv);
    const owner = pos < s.blocks * BLOCK ? 0x4000_0000 + s.id : conv;
    // | 0: an int32, so arrays of tokens hold Smis as a tokenizer's or JSON.parse's do (a uint32 from mix32 makes them doubles)
    return (mix32(mix32(owner + this.seed) ^ pos) % 151_000) | 0;
  }

  /** Engine hash of block b of a conversation: the same for every source holding it. */
  hash(conv: number, b: number): bigint {
    const s = this.sys(conv);
    const owner = b < s.blocks ? 0x4000_0000 + s.id : conv;
    const lo = mix32(owner * 31 + b + this.seed);
    const hi = mix32(lo ^ owner ^ 0x9e3779b9);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  tokens(conv: number, from: number, to: number): number[] {
    const out: number[] = []; // packed, as a decoder or tokenizer builds it (new Array(n) would be holey)
    for (let i = from; i < to; i++) out.push(this.token(conv, i));
    return out;
  }

  /** BlockStored events for blocks [from, to) of a conversation, at most `chunk` blocks each. */
  storeEvents(conv: number, from: number, to: number, chunk = 32): BlockStored[] {
    const out: BlockStored[] = [];
    for (let a = from; a < to; a += chunk) {
      const b = Math.min(to, a + chunk);
      const hashes: bigint[] = [];
      for (let i = a; i < b; i++) hashes.push(this.hash(conv, i));
      out.push({
        type: 'BlockStored',
        block_hashes: hashes,
        parent_block_hash: a === 0 ? null : this.hash(conv, a - 1),
        token_ids: this.tokens(conv, a * BLOCK, b * BLOCK),
        block_size: BLOCK,
        lora_id: null,
        medium: null,
        lora_name: null,
      });
    }
    return out;
  }

  /** Leaf-first removal of a conversation's own blocks, `chunk` hashes per event. */
  removeEvents(conv: number, chunk = 8): BlockRemoved[] {
    const from = this.sys(conv).blocks;
    const out: BlockRemoved[] = [];
    for (let b = this.length(conv); b > from; b -= chunk) {
      const hashes: bigint[] = [];
      for (let i = b - 1; i >= Math.max(from, b - chunk); i--) hashes.push(this.hash(conv, i));
      out.push({ type: 'BlockRemoved', block_hashes: hashes, medium: null });
    }
    return out;
  }
}

export function asBatch(events: (BlockStored | BlockRemoved)[]): KVEventBatch {
  return { ts: 0, events, dp_rank: 0 };
}

import { hashBlock } from '../cache/hash.js';
import type { LoraRef } from '../adapters.js';
import type { GenerateRequest } from '../messages.js';

/** One request inside the scheduler: its tokens (prompt, then generated) and the blocks holding their keys/values. */
export class Sequence {
  readonly rid: string;
  readonly tokens: number[];
  readonly promptLen: number;
  /** Physical block ids covering the computed tokens (the last one possibly partial). */
  blocks: number[] = [];
  /** Tokens whose keys/values are in `blocks`. */
  numComputed = 0;
  /** Leading blocks already registered in the pool. */
  numCommitted = 0;
  /** Prompt tokens found in the cache at first admission; -1 before. */
  cachedTokens = -1;
  startSent = false;
  /** vLLM's cache_salt: part of block 0's hash (and so of every block chained to it). */
  readonly cacheSalt: string | null;
  /** The LoRA adapter it runs under (null: the base model): part of every block's hash. */
  readonly lora: LoraRef | null;
  private readonly hashes: bigint[] = [];

  constructor(readonly req: GenerateRequest, readonly blockSize: number) {
    this.rid = req.rid;
    this.tokens = [...req.promptIds];
    this.promptLen = req.promptIds.length;
    this.cacheSalt = req.cacheSalt ?? null;
    this.lora = req.lora ?? null;
  }

  get numGenerated(): number {
    return this.tokens.length - this.promptLen;
  }

  /** Hash of full block `k` (memoized: tokens only ever grow, so full blocks never change). */
  blockHash(k: number): bigint {
    const bs = this.blockSize;
    if ((k + 1) * bs > this.tokens.length) throw new Error(`block ${k} of ${this.rid} is not full`);
    while (this.hashes.length <= k) {
      const i = this.hashes.length;
      // The salt enters block 0 only (vLLM: cache_salt is an extra key of the first block).
      this.hashes.push(hashBlock(i === 0 ? null : this.hashes[i - 1]!, this.tokens.slice(i * bs, (i + 1) * bs), i === 0 ? this.cacheSalt : null, this.lora?.name ?? null));
    }
    return this.hashes[k]!;
  }

  /** Hashes of the full blocks a prefix-cache hit may cover: at least one token is always computed. */
  reusableHashes(): bigint[] {
    const n = Math.floor((this.tokens.length - 1) / this.blockSize);
    const out: bigint[] = [];
    for (let k = 0; k < n; k++) out.push(this.blockHash(k));
    return out;
  }

  /** Blocks covering every token, the newest (not yet computed) one included: what the next step writes into. */
  blocksNeeded(): number {
    return Math.ceil(this.tokens.length / this.blockSize);
  }
}

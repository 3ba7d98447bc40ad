/**
 * The paged KV cache's bookkeeping: a fixed pool of blocks with reference counts,
 * a registry of full blocks by chained hash (prefix reuse), and LRU eviction of
 * registered blocks nobody references. Every change to the registry queues a KV
 * event; the scheduler drains them once per step into one published batch.
 *
 * Invariant kept by the callers (the scheduler): a sequence's full blocks are all
 * registered, and a sequence that holds a block holds its parent, so a parent always
 * enters the LRU after its children and eviction removes leaves first.
 */
import { LRUCache } from 'lru-cache';
import type { KVEvent } from '../../src/events/types.js';
import type { LoraRef } from '../adapters.js';

export interface CachedBlockInfo {
  /** Unsigned 64-bit block hash, decimal. */
  hash: string;
  parent_hash: string | null;
  token_ids: number[];
  medium: string;
  /** This block's vLLM extra keys as a one-entry BlockStored.extra_keys list ([[salt]] on a salted chain's first block), when it has any. */
  extra_keys?: unknown[];
  /** The LoRA adapter it was computed under (BlockStored.lora_name), when not the base model. */
  lora_name?: string;
}

interface Block {
  ref: number;
  hash: bigint | null;
  parent: bigint | null;
  tokens: number[] | null;
  extra: unknown[] | null;
  lora: LoraRef | null;
}

export class BlockPool {
  private readonly blocks: Block[];
  /** Blocks holding nothing reusable. */
  private readonly free: number[];
  /** Registered full blocks, hash → block id, in registration order. */
  private readonly registry = new Map<bigint, number>();
  /** Registered blocks with ref 0, least recently used first out. */
  private readonly evictable: LRUCache<number, number>;
  private events: KVEvent[] = [];

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    readonly medium = 'GPU',
  ) {
    this.blocks = Array.from({ length: numBlocks }, () => ({ ref: 0, hash: null, parent: null, tokens: null, extra: null, lora: null }));
    // Popped from the end: block 0 is handed out first.
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
    this.evictable = new LRUCache<number, number>({ max: numBlocks });
  }

  /** Blocks an allocation could get now: free ones plus evictable cached ones. */
  get available(): number {
    return this.free.length + this.evictable.size;
  }

  get numFree(): number {
    return this.free.length;
  }

  get numCached(): number {
    return this.registry.size;
  }

  /** Fraction of the pool referenced by running sequences. */
  get usage(): number {
    return (this.numBlocks - this.available) / this.numBlocks;
  }

  refCount(id: number): number {
    return this.blocks[id]!.ref;
  }

  /** Block ids of the longest cached prefix of `hashes`. */
  match(hashes: bigint[]): number[] {
    const ids: number[] = [];
    for (const h of hashes) {
      const id = this.registry.get(h);
      if (id === undefined) break;
      ids.push(id);
    }
    return ids;
  }

  /** Whether `n` fresh blocks can be allocated after taking references on `matched`. */
  canAllocate(n: number, matched: number[] = []): boolean {
    let lost = 0;
    for (const id of matched) if (this.blocks[id]!.ref === 0) lost++;
    return n <= this.available - lost;
  }

  /** Takes a reference on each block (a cached block leaves the LRU while referenced). */
  acquire(ids: readonly number[]): void {
    for (const id of ids) {
      const b = this.blocks[id]!;
      if (b.ref === 0 && b.hash !== null) this.evictable.delete(id);
      b.ref++;
    }
  }

  /** `n` fresh blocks with ref 1, evicting least recently used cached blocks if needed; null if the pool cannot. */
  allocate(n: number): number[] | null {
    if (n > this.available) return null;
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      let id = this.free.pop();
      if (id === undefined) {
        id = this.evictable.pop()!;
        this.evict(id);
      }
      this.blocks[id]!.ref = 1;
      ids.push(id);
    }
    return ids;
  }

  /** Drops one reference per block. Pass a sequence's blocks in order: they are freed last to first, so tails are evicted before their prefixes. */
  release(ids: number[]): void {
    for (let i = ids.length - 1; i >= 0; i--) {
      const id = ids[i]!;
      const b = this.blocks[id]!;
      if (b.ref <= 0) throw new Error(`block ${id} released more often than acquired`);
      if (--b.ref > 0) continue;
      if (b.hash !== null) this.evictable.set(id, id);
      else this.free.push(id);
    }
  }

  /**
   * Registers a just-filled block (held by the caller) under `hash`. Returns the block that now
   * stands for it: `id` itself (newly stored, a BlockStored is queued) or an already cached block
   * with the same hash, on which the caller now holds a reference instead of `id` (`id` is released).
   * `extraKeys` are the block's vLLM extra keys (see hash.ts blockExtraKeys: the salt on block 0),
   * published in the BlockStored's `extra_keys`, one entry per block, as vLLM does; `lora` is
   * the adapter it was computed under (BlockStored lora_id / lora_name, as vLLM's block_pool).
   */
  commit(id: number, hash: bigint, parent: bigint | null, tokens: number[], extraKeys: unknown[] | null = null, lora: LoraRef | null = null): number {
    const existing = this.registry.get(hash);
    if (existing === id) return id;
    if (existing !== undefined) {
      this.acquire([existing]);
      this.release([id]);
      return existing;
    }
    const b = this.blocks[id]!;
    b.hash = hash;
    b.parent = parent;
    b.tokens = tokens;
    b.extra = extraKeys;
    b.lora = lora;
    this.registry.set(hash, id);
    const last = this.events.at(-1);
    if (last?.type === 'BlockStored' && last.block_hashes.at(-1) === parent && last.lora_name === (lora?.name ?? null)) {
      const extra = last.extra_keys as (unknown[] | null)[] | undefined;
      if (extra !== undefined) extra.push(extraKeys);
      else if (extraKeys !== null) last.extra_keys = [...last.block_hashes.map(() => null), extraKeys];
      last.block_hashes.push(hash);
      last.token_ids.push(...tokens);
    } else {
      this.events.push({
        type: 'BlockStored',
        block_hashes: [hash],
        parent_block_hash: parent,
        token_ids: [...tokens],
        block_size: this.blockSize,
        lora_id: lora?.id ?? null,
        medium: this.medium,
        lora_name: lora?.name ?? null,
        ...(extraKeys !== null ? { extra_keys: [extraKeys] } : {}),
      });
    }
    return id;
  }

  /** Forgets every cached block (only when no block is referenced); queues AllBlocksCleared. */
  clear(): boolean {
    if (this.available !== this.numBlocks) return false;
    this.evictable.clear();
    this.registry.clear();
    this.free.length = 0;
    for (let i = this.numBlocks - 1; i >= 0; i--) {
      Object.assign(this.blocks[i]!, { hash: null, parent: null, tokens: null, extra: null, lora: null });
      this.free.push(i);
    }
    this.events.push({ type: 'AllBlocksCleared' });
    return true;
  }

  /** Every cached block, in registration order: the ground truth `GET /cache` serves. */
  list(): CachedBlockInfo[] {
    const out: CachedBlockInfo[] = [];
    for (const [hash, id] of this.registry) {
      const b = this.blocks[id]!;
      out.push({
        hash: hash.toString(),
        parent_hash: b.parent === null ? null : b.parent.toString(),
        token_ids: b.tokens!,
        medium: this.medium,
        ...(b.extra !== null ? { extra_keys: [b.extra] } : {}),
        ...(b.lora !== null ? { lora_name: b.lora.name } : {}),
      });
    }
    return out;
  }

  /**
   * Every cached block as BlockStored events, in registration order (a parent is registered
   * before its children: the scheduler's invariant), chained runs in one event: a snapshot.
   * Exact only when no event is queued (between steps), as the published stream then says the same.
   */
  storedEvents(): KVEvent[] {
    const out: KVEvent[] = [];
    for (const [hash, id] of this.registry) {
      const b = this.blocks[id]!;
      const last = out.at(-1);
      if (last?.type === 'BlockStored' && last.block_hashes.at(-1) === b.parent) {
        const extra = last.extra_keys as (unknown[] | null)[] | undefined;
        if (extra !== undefined) extra.push(b.extra);
        else if (b.extra !== null) last.extra_keys = [...last.block_hashes.map(() => null), b.extra];
        last.block_hashes.push(hash);
        last.token_ids.push(...b.tokens!);
      } else {
        out.push({
          type: 'BlockStored',
          block_hashes: [hash],
          parent_block_hash: b.parent,
          token_ids: [...b.tokens!],
          block_size: this.blockSize,
          lora_id: null,
          medium: this.medium,
          lora_name: null,
          ...(b.extra !== null ? { extra_keys: [b.extra] } : {}),
        });
      }
    }
    return out;
  }

  /** The events queued since the last call. */
  takeEvents(): KVEvent[] {
    const e = this.events;
    this.events = [];
    return e;
  }

  private evict(id: number): void {
    const b = this.blocks[id]!;
    const hash = b.hash!;
    this.registry.delete(hash);
    Object.assign(b, { hash: null, parent: null, tokens: null, extra: null, lora: null });
    const last = this.events.at(-1);
    if (last?.type === 'BlockRemoved') last.block_hashes.push(hash);
    else this.events.push({ type: 'BlockRemoved', block_hashes: [hash], medium: this.medium });
  }
}

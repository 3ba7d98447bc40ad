/**
 * One (worker, rank)'s prefix cache as its KV events describe it, without a model: pure state,
 * events out. A request is a shared system prompt ("family", the same tokens on every rank, so the
 * router's token-keyed tree shares those nodes across sources) followed by a private tail of new
 * blocks stored a few per engine step, as chunked prefill and decode store them. The families stay
 * hot (never evicted); once the cache is full, every step evicts as many tail blocks as it stores,
 * oldest request first and leaf first, as vLLM's LRU of unreferenced blocks would.
 */
import type { BlockHash, KVEvent } from '../../src/events/types.js';

export interface CacheShape {
  blockSize: number;
  /** Shared system prompts. */
  families: number;
  /** Blocks of each family prompt. */
  familyBlocks: number;
  /** New (private) blocks of each request after its family prompt. */
  tailBlocks: number;
  /** Blocks the rank holds at steady state (its KV cache size). */
  capacity: number;
}

/** Below Qwen3's vocabulary (151 643 ids), so /route's vocabulary check accepts them. */
const VOCAB = 150_000;

const mix = (x: number) => {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
};

/** The tokens of family `f`'s prompt: the same on every rank (and what a query uses to hit it). */
export function familyTokens(f: number, shape: Pick<CacheShape, 'familyBlocks' | 'blockSize'>): number[] {
  const n = shape.familyBlocks * shape.blockSize;
  const out = new Array<number>(n);
  for (let j = 0; j < n; j++) out[j] = mix((f + 1) * 1_000_003 + j) % VOCAB;
  return out;
}

interface Tail {
  hashes: BlockHash[];
}

export class RankCache {
  private held = 0;
  private nextHash: bigint;
  private tokenState: number;
  /** Engine hashes of each family's blocks, once stored. */
  private readonly family: (BlockHash[] | null)[];
  private readonly familyToks: number[][];
  /** Requests whose tails are held, oldest first; the last one is being stored. */
  private readonly tails: Tail[] = [];
  private tailsHead = 0;
  private current: { tail: Tail; parent: BlockHash; left: number } | null = null;
  private carry = 0;
  private requests = 0;

  constructor(
    private readonly shape: CacheShape,
    /** Distinct per (worker, rank): seeds hashes and private tokens. */
    readonly sourceIndex: number,
  ) {
    // vLLM's hashes are unsigned 64-bit, often above 2^63: keep them there.
    this.nextHash = (0x8000_0000n | BigInt(sourceIndex)) << 32n;
    this.tokenState = mix(sourceIndex + 0x9e3779b9) | 1;
    this.family = Array.from({ length: shape.families }, () => null);
    this.familyToks = Array.from({ length: shape.families }, (_, f) => familyTokens(f, shape));
  }

  get heldBlocks(): number {
    return this.held;
  }

  /**
   * One engine step that stores `blocks` new blocks (fractional counts accumulate), evicting down
   * to capacity. Returns the step's events (empty when nothing changed).
   */
  step(blocks: number): KVEvent[] {
    this.carry += blocks;
    let n = Math.floor(this.carry);
    this.carry -= n;
    const out: KVEvent[] = [];
    while (n > 0) {
      if (!this.current) this.begin(out);
      const c = this.current!;
      const take = Math.min(n, c.left);
      const hashes: BlockHash[] = [];
      const tokens: number[] = [];
      for (let i = 0; i < take; i++) {
        hashes.push(this.nextHash++);
        for (let j = 0; j < this.shape.blockSize; j++) tokens.push(this.token());
      }
      out.push(stored(hashes, c.parent, tokens, this.shape.blockSize));
      c.tail.hashes.push(...hashes);
      c.parent = hashes[hashes.length - 1]!;
      c.left -= take;
      this.held += take;
      n -= take;
      if (c.left === 0) this.current = null;
    }
    const evicted = this.evict(this.held - this.shape.capacity);
    if (evicted.length > 0) out.push({ type: 'BlockRemoved', block_hashes: evicted, medium: 'GPU' });
    return out;
  }

  /** A new request: its family prompt is stored first if this rank does not hold it yet. */
  private begin(out: KVEvent[]): void {
    const r = this.requests++;
    // The first requests walk every family once (a warm fleet holds them all), then a skewed choice.
    const f = r < this.shape.families ? r : Math.floor(this.shape.families * (this.rand() ** 2));
    let fam = this.family[f];
    if (!fam) {
      fam = Array.from({ length: this.shape.familyBlocks }, () => this.nextHash++);
      this.family[f] = fam;
      out.push(stored(fam, null, this.familyToks[f]!, this.shape.blockSize));
      this.held += fam.length;
    }
    const tail: Tail = { hashes: [] };
    this.tails.push(tail);
    this.current = { tail, parent: fam[fam.length - 1]!, left: this.shape.tailBlocks };
  }

  /** Up to `n` tail blocks, oldest finished request first, each from its leaf end. */
  private evict(n: number): BlockHash[] {
    const out: BlockHash[] = [];
    while (n > 0 && this.tailsHead < this.tails.length) {
      const t = this.tails[this.tailsHead]!;
      if (this.current && t === this.current.tail) break;
      while (n > 0 && t.hashes.length > 0) {
        out.push(t.hashes.pop()!);
        n--;
        this.held--;
      }
      if (t.hashes.length === 0) this.tailsHead++;
    }
    if (this.tailsHead > 1024 && this.tailsHead * 2 > this.tails.length) {
      this.tails.splice(0, this.tailsHead);
      this.tailsHead = 0;
    }
    return out;
  }

  private rand(): number {
    return this.next() / 2 ** 32;
  }

  private token(): number {
    return this.next() % VOCAB;
  }

  /** xorshift32: cheap private tokens, reproducible per source. */
  private next(): number {
    let x = this.tokenState;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.tokenState = x;
    return x >>> 0;
  }
}

function stored(hashes: BlockHash[], parent: BlockHash | null, tokens: number[], blockSize: number): KVEvent {
  return { type: 'BlockStored', block_hashes: hashes, parent_block_hash: parent, token_ids: tokens, block_size: blockSize, lora_id: null, medium: 'GPU', lora_name: null };
}

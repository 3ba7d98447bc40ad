import { chainKeys, loraKey, saltRoot, type Key64 } from './hash.js';
import type { LoraRef } from './prefix-index.js';

/** Keys of one block size: [lo0, hi0, lo1, hi1, …], blocks [0, done) computed. */
interface SizeKeys {
  keys: Uint32Array;
  done: number;
}

/**
 * A prompt's block keys, computed once per request and shared by match,
 * provisional marks, commits and the hit bound. Keys are computed lazily, per block size, only
 * as far as a caller walks (a novel prompt is mostly never hashed).
 */
export class PromptKeys {
  readonly lora: Key64;
  readonly root: Key64;
  /** What the keys were computed under (promptKeysOf checks them before sharing). */
  readonly loraRef: LoraRef;
  readonly salt: string | null;
  /** The prompt's length when the keys were made (a token array that grew since is not shared). */
  readonly length: number;
  private readonly bySize: Map<number, SizeKeys>;

  constructor(
    readonly tokens: ArrayLike<number>,
    /** The block size callers expect (the default for markProvisional). */
    readonly blockSize: number,
    lora: LoraRef = null,
    salt: string | null = null,
    /** Keys already computed for the same tokens, LoRA and salt (withBlockSize shares them). */
    shared?: Map<number, SizeKeys>,
  ) {
    if (!Number.isInteger(blockSize) || blockSize <= 0) throw new RangeError(`invalid block size ${blockSize}`);
    this.lora = loraKey(lora);
    this.root = saltRoot(salt);
    this.bySize = shared ?? new Map();
    this.loraRef = lora;
    this.salt = salt;
    this.length = tokens.length;
  }

  /** The same prompt's keys (shared, not recomputed) with another default block size. */
  withBlockSize(bs: number): PromptKeys {
    return bs === this.blockSize ? this : new PromptKeys(this.tokens, bs, this.loraRef, this.salt, this.bySize);
  }

  /** Full blocks of `bs` tokens in the prompt. */
  blocks(bs: number): number {
    return Math.floor(this.tokens.length / bs);
  }

  /** Keys of blocks [0, n) of size bs as [lo0, hi0, lo1, hi1, …] (n clipped to the prompt). */
  keys(bs: number, n: number): Uint32Array {
    let e = this.bySize.get(bs);
    if (e === undefined) this.bySize.set(bs, (e = { keys: new Uint32Array(this.blocks(bs) * 2), done: 0 }));
    const want = Math.min(n, this.blocks(bs));
    if (want > e.done) {
      chainKeys(this.root.lo, this.root.hi, this.lora.lo, this.lora.hi, this.tokens, bs, e.done, want, e.keys);
      e.done = want;
    }
    return e.keys;
  }
}

/** The last keys made for each token array (a request's tokens are one array from tokenize to commit). */
const memo = new WeakMap<object, PromptKeys>();

/**
 * The PromptKeys of `tokens` under (lora, salt), shared by every consumer of one request: rank,
 * commit, provisional marks and the hit bound all get the same keys, hashed once. Keyed by the
 * token array itself (its identity: callers never change a prompt's ids in place), so nothing
 * outlives the request; another LoRA or salt for the same array gets keys of its own.
 */
export function promptKeysOf(tokens: ArrayLike<number>, blockSize: number, lora: LoraRef = null, salt: string | null = null): PromptKeys {
  const k = memo.get(tokens);
  if (k !== undefined && k.loraRef === lora && k.salt === salt && k.length === tokens.length) return k.withBlockSize(blockSize);
  const fresh = new PromptKeys(tokens, blockSize, lora, salt);
  memo.set(tokens, fresh);
  return fresh;
}

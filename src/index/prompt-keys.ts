import { chainKeys, loraKey, saltRoot, type Key64 } from './hash.js';
import type { LoraRef } from './prefix-index.js';

/**
 * A prompt's block keys, computed once per request and shared by match,
 * provisional marks and commits. Keys are computed lazily, per block size, only
 * as far as a caller walks (a novel prompt is mostly never hashed).
 */
export class PromptKeys {
  readonly lora: Key64;
  readonly root: Key64;
  private readonly bySize = new Map<number, { keys: Uint32Array; done: number }>();

  constructor(
    readonly tokens: ArrayLike<number>,
    /** The block size callers expect (the default for markProvisional). */
    readonly blockSize: number,
    lora: LoraRef = null,
    salt: string | null = null,
  ) {
    if (!Number.isInteger(blockSize) || blockSize <= 0) throw new RangeError(`invalid block size ${blockSize}`);
    this.lora = loraKey(lora);
    this.root = saltRoot(salt);
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

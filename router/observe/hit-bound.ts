import { promptKeysOf } from '../../src/index/index.js';

/**
 * The hit rate's upper bound since the router started: what one unlimited prefix cache that had
 * seen every earlier routed prompt would have held of each new one (full blocks of the prompt's
 * leading chain, at most prompt − 1 tokens: the engine always computes the last one). The
 * dashboard charts actual hits against it. Bounded memory: past `capacity` blocks the oldest
 * are forgotten (then it is the bound of a cache that large).
 */
export class HitBound {
  private readonly seen = new Set<number>();
  promptTokens = 0;
  boundTokens = 0;

  constructor(private readonly capacity = 1 << 20) {}

  /** Counts one routed prompt; returns the tokens the bound cache held of it. */
  observe(tokens: ArrayLike<number>, blockSize: number, lora: string | null = null, salt: string | null = null): number {
    const n = tokens.length;
    this.promptTokens += n;
    const blocks = Math.floor(n / blockSize);
    if (blocks === 0) return 0;
    // The request's own keys: the policy hashed this token array already (rank, commit), so nothing is hashed again.
    const keys = promptKeysOf(tokens, blockSize, lora, salt).keys(blockSize, blocks);
    // 53 of the key's 64 bits: a JS number, exact in a Set; a collision only nudges a statistic.
    const key = (b: number) => (keys[2 * b + 1]! & 0x1f_ffff) * 0x1_0000_0000 + keys[2 * b]!;
    let held = 0;
    while (held < blocks && this.seen.has(key(held))) held++;
    const hit = Math.min(held * blockSize, n - 1);
    this.boundTokens += hit;
    for (let b = 0; b < blocks; b++) {
      const k = key(b);
      if (this.seen.has(k)) this.seen.delete(k); // re-inserted: most recently seen last
      this.seen.add(k);
    }
    while (this.seen.size > this.capacity) this.seen.delete(this.seen.values().next().value!);
    return hit;
  }
}

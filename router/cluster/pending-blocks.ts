/**
 * Which prompt blocks the pending prefills on each source compute, by block key (src/index keys:
 * 64-bit, chained, so a key names its whole prefix). A request routed to a source whose pending
 * prefill computes part of its prompt finds that part cached when its turn comes: that part is
 * neither uncached work for it nor queued work ahead of it. Fed by the replicas' keyed pending
 * entries (this one's and the others', over NATS); read by cache_aware through WorkerLoad.pending.
 */
import type { PendingPrefill } from '../load.js';

/** One pending prefill that is known by its keys: it computes blocks [from, to) of its prompt. */
export interface PendingEntry {
  source: string;
  /** The prompt's block keys as [lo0, hi0, lo1, hi1, …], at least `to` blocks. */
  keys: Uint32Array;
  from: number;
  to: number;
  blockSize: number;
}

/** 53 of the key's 64 bits as a Map key (a collision only discounts one block by mistake). */
export const blockKeyId = (lo: number, hi: number): number => (hi & 0x1fffff) * 0x1_0000_0000 + (lo >>> 0);

class SourcePending implements PendingPrefill {
  readonly counts = new Map<number, number>();
  keyedTokens = 0;
  entries = 0;

  count(lo: number, hi: number): number {
    return this.counts.get(blockKeyId(lo, hi)) ?? 0;
  }
}

export class PendingBlocks {
  private readonly bySource = new Map<string, SourcePending>();

  add(e: PendingEntry): void {
    if (e.to <= e.from) return;
    let s = this.bySource.get(e.source);
    if (!s) this.bySource.set(e.source, (s = new SourcePending()));
    for (let b = e.from; b < e.to; b++) {
      const id = blockKeyId(e.keys[2 * b]!, e.keys[2 * b + 1]!);
      s.counts.set(id, (s.counts.get(id) ?? 0) + 1);
    }
    s.keyedTokens += (e.to - e.from) * e.blockSize;
    s.entries++;
  }

  remove(e: PendingEntry): void {
    const s = this.bySource.get(e.source);
    if (!s || e.to <= e.from) return;
    for (let b = e.from; b < e.to; b++) {
      const id = blockKeyId(e.keys[2 * b]!, e.keys[2 * b + 1]!);
      const n = (s.counts.get(id) ?? 0) - 1;
      if (n > 0) s.counts.set(id, n);
      else s.counts.delete(id);
    }
    s.keyedTokens -= (e.to - e.from) * e.blockSize;
    if (--s.entries <= 0) this.bySource.delete(e.source);
  }

  /** The source's keyed pending blocks; undefined when none. */
  view(source: string): PendingPrefill | undefined {
    return this.bySource.get(source);
  }

  forget(source: string): void {
    this.bySource.delete(source);
  }

  sources(): string[] {
    return [...this.bySource.keys()];
  }
}

/**
 * A prompt against one source's pending blocks: its matched prefix there extended by the blocks
 * a pending prefill there computes (contiguous from the match), and the pending tokens computing
 * blocks of that prefix (each pending prefill computing a block counts: two replicas that sent the
 * same new prefix there at the same instant queued it twice, and both are this prompt's own).
 * `keys` are the prompt's keys as [lo, hi, …] for blocks [0, maxBlocks).
 */
export function pendingOverlap(p: PendingPrefill, keys: Uint32Array, blockSize: number, matchedTokens: number, maxBlocks: number): { matchedTokens: number; sharedTokens: number } {
  const m = Math.min(maxBlocks, Math.floor(matchedTokens / blockSize));
  let shared = 0;
  for (let b = 0; b < m; b++) shared += p.count(keys[2 * b]!, keys[2 * b + 1]!);
  let b = m;
  for (; b < maxBlocks; b++) {
    const n = p.count(keys[2 * b]!, keys[2 * b + 1]!);
    if (n === 0) break;
    shared += n;
  }
  return { matchedTokens: b > m ? b * blockSize : matchedTokens, sharedTokens: shared * blockSize };
}

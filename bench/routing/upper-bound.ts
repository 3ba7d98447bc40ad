/**
 * The upper bound of the prefix-cache hit rate: one cache of unlimited size that has seen every
 * earlier request's prompt, at the workers' block granularity, with the workers' reuse rule
 * (full blocks only, and at least one prompt token is always computed).
 */
import type { BenchRequest } from './workloads.js';

export interface UpperBound {
  hitRate: number;
  cachedTokens: number;
  promptTokens: number;
  /** Distinct full blocks over the whole workload: the working set an unlimited cache would hold. */
  uniqueBlocks: number;
  /** Per request: tokens the unlimited cache would serve (for plots or checks). */
  perRequest: number[];
}

/** Two 32-bit lanes of a chained block hash, folded into one exact JS number (53 bits). */
function chain(parent: number, tokens: number[], from: number, to: number): number {
  let a = (parent % 4294967296) ^ 0x811c9dc5;
  let b = Math.floor(parent / 4294967296) ^ 0x01000193;
  for (let i = from; i < to; i++) {
    const t = tokens[i]!;
    a = Math.imul(a ^ t, 0x01000193);
    b = Math.imul(b ^ (t + 0x9e37), 0x85ebca6b);
    b ^= b >>> 13;
  }
  a ^= a >>> 16;
  a = Math.imul(a, 0x7feb352d);
  a ^= a >>> 15;
  return ((b >>> 0) & 0x1fffff) * 4294967296 + (a >>> 0);
}

/** Block keys of the full blocks of `tokens`. */
export function blockKeys(tokens: number[], blockSize: number): number[] {
  const n = Math.floor(tokens.length / blockSize);
  const keys: number[] = new Array(n);
  let parent = 0;
  for (let k = 0; k < n; k++) {
    parent = chain(parent, tokens, k * blockSize, (k + 1) * blockSize);
    keys[k] = parent;
  }
  return keys;
}

export function upperBound(requests: BenchRequest[], blockSize: number): UpperBound {
  const seen = new Set<number>();
  let cached = 0;
  let total = 0;
  const perRequest: number[] = [];
  // Arrival order (ties keep workload order).
  const order = [...requests].sort((x, y) => x.at - y.at || x.id - y.id);
  for (const r of order) {
    const tokens = r.prompt();
    const keys = blockKeys(tokens, blockSize);
    const reusable = Math.floor((tokens.length - 1) / blockSize);
    let hit = 0;
    while (hit < reusable && seen.has(keys[hit]!)) hit++;
    for (const k of keys) seen.add(k);
    cached += hit * blockSize;
    total += tokens.length;
    perRequest[r.id] = hit * blockSize;
  }
  return { hitRate: total === 0 ? 0 : cached / total, cachedTokens: cached, promptTokens: total, uniqueBlocks: seen.size, perRequest };
}

/**
 * Hit rate of one LRU cache of `capacityBlocks` blocks that sees every request (what the whole fleet's
 * cache could reach if a router partitioned the work perfectly): the bound that eviction leaves.
 */
export function lruBound(requests: BenchRequest[], blockSize: number, capacityBlocks: number): { hitRate: number; cachedTokens: number } {
  const lru = new Map<number, true>();
  let cached = 0;
  let total = 0;
  const order = [...requests].sort((x, y) => x.at - y.at || x.id - y.id);
  for (const r of order) {
    const tokens = r.prompt();
    const keys = blockKeys(tokens, blockSize);
    const reusable = Math.floor((tokens.length - 1) / blockSize);
    let hit = 0;
    while (hit < reusable && lru.has(keys[hit]!)) hit++;
    for (const k of keys) {
      lru.delete(k);
      lru.set(k, true);
    }
    while (lru.size > capacityBlocks) lru.delete(lru.keys().next().value!);
    cached += hit * blockSize;
    total += tokens.length;
  }
  return { hitRate: total === 0 ? 0 : cached / total, cachedTokens: cached };
}

import { LRUCache } from 'lru-cache';
import type { Candidate, CostWeights, Policy, RouteRequest, Scored } from './policy.js';
import { costTerms, sortByCost } from './policy.js';

export interface ApproxTreeOptions {
  max_blocks_per_worker: number;
  ttl_ms: number;
  block_size: number;
}

/**
 * The baseline most deployed routers use: no events, only a memory of what this router sent where.
 * Per source, an LRU set of chained block keys (key of block i covers tokens [0, (i+1)·B)); the
 * match is the longest run of leading blocks present. Costs as cache_aware, so the two differ only
 * in what they know.
 */
export class ApproxTreePolicy implements Policy {
  readonly name = 'approx_tree';
  private readonly trees = new Map<string, LRUCache<string, true>>();

  constructor(
    private readonly w: CostWeights,
    private readonly opts: ApproxTreeOptions,
    private readonly rnd: () => number = Math.random,
  ) {}

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    const keysCache = new Map<number[], string[]>();
    const scored = candidates.map((c): Scored => {
      const tokens = req.tokensFor(c);
      let keys = keysCache.get(tokens);
      if (!keys) {
        keys = blockKeys(tokens, this.opts.block_size, saltedLora(req));
        keysCache.set(tokens, keys);
      }
      const tree = this.trees.get(c.source);
      // A hit reaches at most prompt - 1 tokens (vLLM recomputes the last prompt token: kv_cache_manager.py get_computed_blocks, max_cache_hit_length = num_tokens - 1); has() leaves the LRU order alone.
      const reachable = Math.floor(Math.max(0, tokens.length - 1) / this.opts.block_size);
      let blocks = 0;
      if (tree) while (blocks < reachable && tree.has(keys[blocks]!)) blocks++;
      const matched = blocks * this.opts.block_size;
      const { terms, cost } = costTerms(this.w, tokens.length, matched, c.load);
      return { candidate: c, matchedTokens: matched, indexMatchedTokens: matched, promptTokens: tokens.length, terms, cost };
    });
    return sortByCost(scored, this.w.tie_tolerance, this.rnd);
  }

  commit(req: RouteRequest, pick: Candidate): void {
    let tree = this.trees.get(pick.source);
    if (!tree) {
      tree = new LRUCache<string, true>({
        max: this.opts.max_blocks_per_worker,
        ...(this.opts.ttl_ms > 0 ? { ttl: this.opts.ttl_ms, ttlAutopurge: false } : {}),
      });
      this.trees.set(pick.source, tree);
    }
    // Salted requests live under their own keys (vLLM's cache_salt).
    // Root last, so it is the most recently used: the LRU evicts leaves before their prefixes.
    const keys = blockKeys(req.tokensFor(pick), this.opts.block_size, saltedLora(req));
    for (let i = keys.length - 1; i >= 0; i--) tree.set(keys[i]!, true);
  }

  forget(source: string): void {
    this.trees.delete(source);
  }

  /** Blocks remembered for a source (tests, /workers). */
  size(source: string): number {
    return this.trees.get(source)?.size ?? 0;
  }
}

/** LoRA and salt both seed the chain: blocks under another salt never match. */
function saltedLora(req: RouteRequest): string | null {
  if (req.salt === null) return req.lora;
  return `${req.lora ?? ''}\u0000salt:${req.salt}`;
}

/** Chained 64-bit-ish keys (two FNV-1a 32-bit lanes) of each full block. */
export function blockKeys(tokens: number[], blockSize: number, lora: string | null): string[] {
  const out: string[] = [];
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ 0x9e3779b9;
  if (lora) {
    for (let i = 0; i < lora.length; i++) {
      h1 = Math.imul(h1 ^ lora.charCodeAt(i), 0x01000193);
      h2 = Math.imul(h2 ^ lora.charCodeAt(i), 0x5bd1e995);
    }
  }
  const full = Math.floor(tokens.length / blockSize);
  for (let b = 0; b < full; b++) {
    for (let i = b * blockSize; i < (b + 1) * blockSize; i++) {
      const t = tokens[i]!;
      h1 = Math.imul(h1 ^ (t & 0xffff), 0x01000193);
      h1 = Math.imul(h1 ^ (t >>> 16), 0x01000193);
      h2 = Math.imul(h2 ^ t, 0x5bd1e995);
      h2 ^= h2 >>> 15;
    }
    out.push(`${(h1 >>> 0).toString(36)}.${(h2 >>> 0).toString(36)}.${b}`);
  }
  return out;
}

import type { PromptKeys } from './prompt-keys.js';
import { HEADER, type NodeStore } from './node-store.js';

/** Blocks whose keys are taken before their lookups: independent lookups overlap their cache misses. */
const MAX_CHUNK = 64;

/**
 * Walks a prompt block by block for every source of one block size at once.
 * Per block, one lookup and a few word operations: the sources still matching
 * are a bit set, narrowed by the block's membership bits. A source costs work only
 * when it changes tier or drops out, so the walk follows the prompt, not sources x prompt.
 */
export class PromptWalker {
  private readonly found = new Int32Array(MAX_CHUNK);
  private scratch = new Uint32Array(0);
  /** Indices of the words of `alive` that are not zero (the only words a block can change). */
  private live = new Int32Array(0);

  constructor(private readonly nodes: NodeStore) {}

  /**
   * For every source slot in `members`, adds the prompt tokens it holds to
   * counts[slot * (media + 1) + tier]: tier m < media is medium m (the fastest
   * holding the block wins), tier `media` is provisional. Only the first `nTokens`
   * tokens are walked; the keys come from `prompt` (hashed once per request).
   */
  walk(prompt: PromptKeys, nTokens: number, bs: number, members: Uint32Array, counts: Float64Array): void {
    const ns = this.nodes;
    const W = ns.words;
    const M = ns.media;
    const K = M + 1;
    if (this.scratch.length < (K + 1) * W) this.scratch = new Uint32Array((K + 1) * W * 2);
    const alive = this.scratch.subarray(0, W);
    // tier[m * W + w]: the sources whose fastest tier for the current block is m
    const tier = this.scratch.subarray(W, W + K * W);
    alive.set(members);
    tier.fill(0);
    if (this.live.length < W) this.live = new Int32Array(W * 2);
    const live = this.live;
    let nLive = 0;
    for (let w = 0; w < W; w++) if (alive[w] !== 0) live[nLive++] = w;
    const found = this.found;
    const nBlocks = Math.floor(Math.min(nTokens, prompt.tokens.length) / bs);
    let done = 0; // blocks walked
    let last = -2; // record of the last block found
    let prev = -1; // its words' offset
    const span = W * K; // provisional and media words of a record
    let chunk = 8; // small first: most of a novel prompt is never looked up
    walk: for (let b = 0; b < nBlocks; b += chunk, chunk = Math.min(MAX_CHUNK, chunk * 2)) {
      const c = Math.min(chunk, nBlocks - b);
      const keys = prompt.keys(bs, b + c);
      let nFound = 0;
      while (nFound < c) {
        const n = ns.findNear(last + 1, keys[2 * (b + nFound)], keys[2 * (b + nFound) + 1]);
        if (n < 0) break;
        found[nFound++] = last = n;
      }
      const rec = ns.rec;
      for (let k = 0; k < nFound; k++) {
        const base = found[k] * ns.stride + HEADER;
        // Along a chain most blocks have the previous block's holders: then no source changes tier.
        // Only the words of sources still matching can change anything (a dead word's tiers are all zero),
        // so only they are compared: the check costs what the surviving sources cost, not the fleet.
        let same = prev >= 0;
        for (let i = 0; same && i < nLive; i++) {
          const w = live[i];
          for (let j = w; j < span; j += W) {
            if (rec[base + j] !== rec[prev + j]) {
              same = false;
              break;
            }
          }
        }
        prev = base;
        if (same) {
          done++;
          continue;
        }
        const at = done * bs;
        let kept = 0;
        for (let i = 0; i < nLive; i++) {
          const w = live[i];
          let rest = alive[w];
          for (let m = 0; m <= M; m++) {
            // media words sit after the provisional words; provisional (m = M) is tried last
            const t = rec[m < M ? base + W * (1 + m) + w : base + w] & rest;
            rest &= ~t;
            const ti = m * W + w;
            const was = tier[ti];
            if (t !== was) {
              // Only sources changing tier cost anything: a source's tokens in a tier are (left - entered) blocks.
              addBits(t & ~was, w, m, K, -at, counts);
              addBits(was & ~t, w, m, K, at, counts);
              tier[ti] = t;
            }
          }
          alive[w] &= ~rest; // sources holding this block in no tier drop out
          if (alive[w] !== 0) live[kept++] = w;
        }
        nLive = kept;
        done++;
        if (nLive === 0) break walk;
      }
      if (nFound < c) break;
    }
    const at = done * bs;
    for (let m = 0; m < K; m++) for (let w = 0; w < W; w++) addBits(tier[m * W + w], w, m, K, at, counts);
  }
}

/** Adds `v` to counts[slot * K + m] for every slot bit in word w of `bits`. */
function addBits(bits: number, w: number, m: number, K: number, v: number, counts: Float64Array): void {
  while (bits !== 0) {
    const slot = w * 32 + (31 - Math.clz32(bits & -bits));
    counts[slot * K + m] += v;
    bits &= bits - 1;
  }
}

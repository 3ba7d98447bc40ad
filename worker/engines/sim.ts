/**
 * The sim engine: the scheduler and cache run for real, the network is a timing model.
 * A step sleeps  prefill tokens / prefillTokensPerS  +  decodeStepMs × (1 + (batch − 1) / 16)
 * and returns pseudo-random tokens that depend only on (seed, adapter, position, previous token), so a
 * prompt gives the same output whether or not its prefix was cached. EOS is never produced.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Engine, SequenceStep } from './engine.js';

export interface SimEngineOptions {
  blockSize: number;
  numBlocks: number;
  eosTokenIds: number[];
  /** Tokens are drawn from [0, vocabSize) minus the EOS ids. */
  vocabSize: number;
  prefillTokensPerS: number;
  decodeStepMs: number;
}

/** How much a step slows down per extra sequence in the batch (1/16 of the batch-1 step each). */
const BATCH_SLOWDOWN = 1 / 16;

export class SimEngine implements Engine {
  readonly kind = 'sim' as const;
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly eosTokenIds: number[];
  private readonly opts: SimEngineOptions;

  constructor(opts: SimEngineOptions) {
    if (opts.vocabSize <= opts.eosTokenIds.length) throw new Error('sim engine: vocabulary too small');
    this.opts = opts;
    this.blockSize = opts.blockSize;
    this.numBlocks = opts.numBlocks;
    this.eosTokenIds = opts.eosTokenIds;
  }

  /** Simulated duration of a step, in ms. */
  stepMs(seqs: SequenceStep[]): number {
    let prefill = 0;
    for (const s of seqs) if (s.newTokens.length > 1) prefill += s.newTokens.length;
    const decode = seqs.length === 0 ? 0 : this.opts.decodeStepMs * (1 + (seqs.length - 1) * BATCH_SLOWDOWN);
    return (prefill / this.opts.prefillTokensPerS) * 1000 + decode;
  }

  async step(seqs: SequenceStep[]): Promise<number[]> {
    const ms = this.stepMs(seqs);
    if (ms >= 1) await sleep(ms);
    else await new Promise((r) => setImmediate(r));
    return seqs.map((s) => this.token((s.sampling.seed ?? 0) ^ adapterSeed(s.lora ?? null), s.startPos + s.newTokens.length, s.newTokens.at(-1)!));
  }

  /** A deterministic token for (seed, position, previous token), never an EOS id. */
  token(seed: number, pos: number, prev: number): number {
    let h = mix32(mix32(mix32(0x9e3779b9 ^ seed) ^ pos) ^ prev);
    for (;;) {
      const id = h % this.opts.vocabSize;
      if (!this.eosTokenIds.includes(id)) return id;
      h = mix32(h + 1);
    }
  }

  async close(): Promise<void> {}
}

/** A named adapter changes the sim's output as real weights would: its name perturbs the seed (0 for the base model). */
function adapterSeed(lora: string | null): number {
  if (lora === null) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < lora.length; i++) h = mix32(h ^ lora.charCodeAt(i));
  return h | 1;
}

/** murmur3's 32-bit finalizer: a cheap, well-spread integer hash (unsigned result). */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * The sim engine: the scheduler and cache run for real, the network is a timing model.
 * A step sleeps for the time sim-timing.ts gives it (by default a profile of Llama-3-8B on an
 * A100; --prefill-tokens-per-s / --decode-step-ms select the older linear model; --speed-factor
 * divides it) and returns pseudo-random tokens that depend only on (seed, adapter, position,
 * previous token), so a prompt gives the same output whether or not its prefix was cached,
 * however it is chunked. EOS is never produced.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Engine, SequenceStep } from './engine.js';
import { stepTimer, type StepTimer } from './sim-timing.js';

export interface SimEngineOptions {
  blockSize: number;
  numBlocks: number;
  eosTokenIds: number[];
  /** Tokens are drawn from [0, vocabSize) minus the EOS ids. */
  vocabSize: number;
  /** Override of the profile model (see sim-timing.ts); null or absent = the profile. */
  prefillTokensPerS?: number | null;
  /** Override of the profile model (see sim-timing.ts); null or absent = the profile. */
  decodeStepMs?: number | null;
  /** Divides every step time (2 = twice as fast); default 1. */
  speedFactor?: number;
}

export class SimEngine implements Engine {
  readonly kind = 'sim' as const;
  readonly blockSize: number;
  readonly numBlocks: number;
  readonly eosTokenIds: number[];
  private readonly opts: SimEngineOptions;
  private readonly timer: StepTimer;

  constructor(opts: SimEngineOptions) {
    if (opts.vocabSize <= opts.eosTokenIds.length) throw new Error('sim engine: vocabulary too small');
    this.opts = opts;
    this.timer = stepTimer(opts);
    this.blockSize = opts.blockSize;
    this.numBlocks = opts.numBlocks;
    this.eosTokenIds = opts.eosTokenIds;
  }

  /** Simulated duration of a step, in ms. */
  stepMs(seqs: SequenceStep[]): number {
    return this.timer(seqs.map((s) => ({ newTokens: s.newTokens.length, startPos: s.startPos })));
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

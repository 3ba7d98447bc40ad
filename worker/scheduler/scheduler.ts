/**
 * Continuous batching over the paged cache, scheduled like vLLM's v1 scheduler (see plan.ts):
 * a token budget per step, running requests first (a decode takes one token, a partial prefill
 * its next chunk), then chunked prefill of waiting requests from what is left; the newest
 * running request is preempted (recomputed later) when blocks run out. A step applies the
 * plan, runs one engine step, registers newly full blocks, emits outputs (a prefill chunk that
 * does not finish its prompt emits nothing), frees finished sequences, and hands the step's KV
 * events to `publish` as one batch.
 */
import type { KVEvent } from '../../src/events/types.js';
import { BlockPool } from '../cache/block-pool.js';
import { blockExtraKeys } from '../cache/hash.js';
import type { Engine, SequenceStep } from '../engines/engine.js';
import type { FinishReason, GenerateRequest, LoadInfo, SeqOutput } from '../messages.js';
import { planStep, type StepPlan } from './plan.js';
import { Sequence } from './sequence.js';

export interface SchedulerOptions {
  engine: Engine;
  maxBatch: number;
  /** vLLM's max_num_batched_tokens: tokens computed per step, all requests together (default 2048). */
  maxNumBatchedTokens?: number;
  publish: (events: KVEvent[]) => void;
  /** Called with each step's plan after the engine ran it (tests and diagnostics). */
  onStep?: (plan: StepPlan) => void;
}

/** vLLM's default max_num_batched_tokens for the OpenAI server on an A100 (EngineArgs.get_batch_defaults). */
export const DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048;

/** Tokens kept for the detokenizer's context. */
const PROMPT_TAIL = 5;

export class Scheduler {
  readonly pool: BlockPool;
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly engine: Engine;
  private readonly maxBatch: number;
  private readonly maxNumBatchedTokens: number;
  private readonly onStep: ((plan: StepPlan) => void) | undefined;
  private readonly publish: (events: KVEvent[]) => void;
  /** Counters for metrics: prompt tokens seen at first admission and how many of them hit the cache. */
  readonly stats = { promptTokens: 0, cachedTokens: 0, preemptions: 0, steps: 0 };

  constructor(opts: SchedulerOptions) {
    this.engine = opts.engine;
    this.pool = new BlockPool(opts.engine.numBlocks, opts.engine.blockSize);
    this.maxBatch = opts.maxBatch;
    this.maxNumBatchedTokens = opts.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS;
    if (!Number.isInteger(this.maxNumBatchedTokens) || this.maxNumBatchedTokens < 1) throw new Error(`maxNumBatchedTokens must be a positive integer, got ${this.maxNumBatchedTokens}`);
    this.onStep = opts.onStep;
    this.publish = opts.publish;
  }

  get idle(): boolean {
    return this.running.length === 0 && this.waiting.length === 0;
  }

  add(req: GenerateRequest): void {
    const cap = this.pool.numBlocks * this.pool.blockSize;
    if (req.promptIds.length + req.maxTokens > cap) {
      // The API checks this first; a request that can never fit must not wait forever.
      throw new Error(`request ${req.rid} needs ${req.promptIds.length + req.maxTokens} tokens, the pool holds ${cap}`);
    }
    this.waiting.push(new Sequence(req, this.pool.blockSize));
  }

  /** Drops a request wherever it is; returns its final output, or null if it is unknown (already finished). */
  abort(rid: string): SeqOutput | null {
    const w = this.waiting.findIndex((s) => s.rid === rid);
    if (w >= 0) {
      const [seq] = this.waiting.splice(w, 1);
      this.pool.release(seq!.blocks);
      return this.output(seq!, [], 'abort');
    }
    const r = this.running.findIndex((s) => s.rid === rid);
    if (r < 0) return null;
    const [seq] = this.running.splice(r, 1);
    this.pool.release(seq!.blocks);
    return this.output(seq!, [], 'abort');
  }

  /** Empties the cache if no request holds blocks; publishes AllBlocksCleared. */
  flush(): { ok: boolean; message: string } {
    if (!this.idle) {
      return { ok: false, message: `cache not flushed: ${this.running.length} running and ${this.waiting.length} waiting requests` };
    }
    this.pool.clear();
    this.flushEvents();
    return { ok: true, message: 'cache flushed' };
  }

  load(): LoadInfo {
    let pending = 0;
    for (const s of this.waiting) pending += s.tokens.length - this.pool.match(s.reusableHashes()).length * this.pool.blockSize;
    // Running requests still in chunked prefill: the tokens left (a decode's one token is not prefill).
    for (const s of this.running) {
      const left = s.tokens.length - s.numComputed;
      if (left > 1) pending += left;
    }
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      pending_prefill_tokens: pending,
      cache_usage: this.pool.usage,
      num_blocks: this.pool.numBlocks,
      free_blocks: this.pool.available,
      cached_blocks: this.pool.numCached,
    };
  }

  /** One scheduler step; returns the outputs it produced (nothing when idle). */
  async step(): Promise<SeqOutput[]> {
    const plan = this.plan();
    for (const rid of plan.preempted) this.preempt(this.running.find((s) => s.rid === rid)!);
    // Cached prefixes are taken before any allocation, which could otherwise evict them.
    for (const p of plan.admitted) this.pool.acquire(p.cachedBlocks);
    const batch: { seq: Sequence; n: number }[] = [];
    for (const p of plan.running) {
      const seq = this.running.find((s) => s.rid === p.id)!;
      if (p.newBlocks > 0) seq.blocks.push(...this.pool.allocate(p.newBlocks)!);
      batch.push({ seq, n: p.numNewTokens });
    }
    for (const p of plan.admitted) {
      const seq = this.waiting.shift()!;
      if (seq.rid !== p.id) throw new Error(`scheduler: admitted ${p.id} but ${seq.rid} heads the queue`);
      seq.blocks = [...p.cachedBlocks, ...this.pool.allocate(p.newBlocks)!];
      seq.numCommitted = p.cachedBlocks.length;
      seq.numComputed = p.cachedBlocks.length * this.pool.blockSize;
      if (seq.cachedTokens < 0) {
        seq.cachedTokens = seq.numComputed;
        this.stats.promptTokens += seq.promptLen;
        this.stats.cachedTokens += seq.cachedTokens;
      }
      this.running.push(seq);
      batch.push({ seq, n: p.numNewTokens });
    }
    if (batch.length === 0) {
      this.flushEvents();
      return [];
    }
    const steps: SequenceStep[] = batch.map(({ seq, n }) => ({
      seqId: seq.rid,
      newTokens: seq.tokens.slice(seq.numComputed, seq.numComputed + n),
      startPos: seq.numComputed,
      blockTable: [...seq.blocks],
      sampling: seq.req.sampling,
      lora: seq.lora?.name ?? null,
    }));
    const next = await this.engine.step(steps);
    if (next.length !== batch.length) throw new Error(`engine returned ${next.length} tokens for ${batch.length} sequences`);
    this.stats.steps++;
    this.onStep?.(plan);

    const outs: SeqOutput[] = [];
    batch.forEach(({ seq, n }, i) => {
      seq.numComputed += n;
      this.commitFullBlocks(seq);
      // A prefill chunk that leaves prompt tokens uncomputed samples nothing (its token is dropped).
      if (seq.numComputed < seq.tokens.length) return;
      const tok = next[i]!;
      seq.tokens.push(tok);
      const finish = this.finishReason(seq, tok);
      if (finish !== null) {
        this.running.splice(this.running.indexOf(seq), 1);
        this.pool.release(seq.blocks);
      }
      outs.push(this.output(seq, [tok], finish));
    });
    this.flushEvents();
    return outs;
  }

  /** This step's decision from the current queues and pool (nothing is changed). */
  plan(): StepPlan {
    return planStep({
      tokenBudget: this.maxNumBatchedTokens,
      maxRunning: this.maxBatch,
      blockSize: this.pool.blockSize,
      freeBlocks: this.pool.available,
      running: this.running.map((s) => ({ id: s.rid, numTokens: s.tokens.length, numComputed: s.numComputed, blocks: s.blocks })),
      waiting: this.waiting.map((s) => ({ id: s.rid, numTokens: s.tokens.length, seq: s })),
      refCount: (b) => this.pool.refCount(b),
      cachedPrefix: (w) => this.pool.match(w.seq.reusableHashes()),
    });
  }

  private preempt(seq: Sequence): void {
    this.running.splice(this.running.indexOf(seq), 1);
    this.pool.release(seq.blocks);
    seq.blocks = [];
    seq.numComputed = 0;
    seq.numCommitted = 0;
    this.waiting.unshift(seq);
    this.stats.preemptions++;
  }

  /** Registers blocks that became full in this step (a block already cached under the same hash replaces ours). */
  private commitFullBlocks(seq: Sequence): void {
    const bs = this.pool.blockSize;
    const full = Math.floor(seq.numComputed / bs);
    for (let k = seq.numCommitted; k < full; k++) {
      const parent = k === 0 ? null : seq.blockHash(k - 1);
      seq.blocks[k] = this.pool.commit(seq.blocks[k]!, seq.blockHash(k), parent, seq.tokens.slice(k * bs, (k + 1) * bs), blockExtraKeys(k, seq.cacheSalt, seq.lora?.name ?? null), seq.lora);
    }
    seq.numCommitted = Math.max(seq.numCommitted, full);
  }

  private finishReason(seq: Sequence, tok: number): FinishReason | null {
    if (!seq.req.ignoreEos && this.engine.eosTokenIds.includes(tok)) return 'stop';
    if (seq.numGenerated >= seq.req.maxTokens) return 'length';
    return null;
  }

  private output(seq: Sequence, ids: number[], finish: FinishReason | null): SeqOutput {
    const out: SeqOutput = { rid: seq.rid, ids, finish };
    if (!seq.startSent) {
      seq.startSent = true;
      out.start = {
        promptTokens: seq.promptLen,
        cachedTokens: Math.max(0, seq.cachedTokens),
        stop: seq.req.stop,
        promptTail: seq.req.promptIds.slice(-PROMPT_TAIL),
      };
    }
    return out;
  }

  private flushEvents(): void {
    const events = this.pool.takeEvents();
    if (events.length > 0) this.publish(events);
  }
}

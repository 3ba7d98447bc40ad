/**
 * Continuous batching over the paged cache. A step: give every running sequence room for
 * its next token (preempting the newest if the pool is full), admit waiting requests while
 * the batch and the pool allow, run one engine step (prefills of the uncached suffix and one
 * decode token per running sequence, mixed), register newly full blocks, emit outputs, free
 * finished sequences, and hand the step's KV events to `publish` as one batch.
 */
import type { KVEvent } from '../../src/events/types.js';
import { BlockPool } from '../cache/block-pool.js';
import { blockExtraKeys } from '../cache/hash.js';
import type { Engine, SequenceStep } from '../engines/engine.js';
import type { FinishReason, GenerateRequest, LoadInfo, SeqOutput } from '../messages.js';
import { Sequence } from './sequence.js';

export interface SchedulerOptions {
  engine: Engine;
  maxBatch: number;
  /** Upper bound of prompt tokens prefilled in one step (the first admitted request always goes). */
  maxPrefillTokens?: number;
  publish: (events: KVEvent[]) => void;
}

/** Tokens kept for the detokenizer's context. */
const PROMPT_TAIL = 5;

export class Scheduler {
  readonly pool: BlockPool;
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly engine: Engine;
  private readonly maxBatch: number;
  private readonly maxPrefillTokens: number;
  private readonly publish: (events: KVEvent[]) => void;
  /** Counters for metrics: prompt tokens seen at first admission and how many of them hit the cache. */
  readonly stats = { promptTokens: 0, cachedTokens: 0, preemptions: 0, steps: 0 };

  constructor(opts: SchedulerOptions) {
    this.engine = opts.engine;
    this.pool = new BlockPool(opts.engine.numBlocks, opts.engine.blockSize);
    this.maxBatch = opts.maxBatch;
    this.maxPrefillTokens = opts.maxPrefillTokens ?? 8192;
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
    this.reserveDecodeSlots();
    this.admit();
    if (this.running.length === 0) {
      this.flushEvents();
      return [];
    }
    const batch = [...this.running];
    const steps: SequenceStep[] = batch.map((s) => ({
      seqId: s.rid,
      newTokens: s.tokens.slice(s.numComputed),
      startPos: s.numComputed,
      blockTable: [...s.blocks],
      sampling: s.req.sampling,
      lora: s.lora?.name ?? null,
    }));
    const next = await this.engine.step(steps);
    if (next.length !== batch.length) throw new Error(`engine returned ${next.length} tokens for ${batch.length} sequences`);
    this.stats.steps++;

    const outs: SeqOutput[] = [];
    batch.forEach((seq, i) => {
      seq.numComputed = seq.tokens.length;
      this.commitFullBlocks(seq);
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

  /** Every running sequence gets a slot for its newest token; when the pool is short, the newest sequences are preempted (recomputed later). */
  private reserveDecodeSlots(): void {
    for (const seq of [...this.running]) {
      if (!this.running.includes(seq)) continue;
      const need = seq.blocksNeeded() - seq.blocks.length;
      if (need <= 0) continue;
      while (!this.pool.canAllocate(need)) {
        const victim = this.running.at(-1)!;
        this.preempt(victim);
        if (victim === seq) break;
      }
      if (this.running.includes(seq)) seq.blocks.push(...this.pool.allocate(need)!);
    }
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

  /** FIFO admission: the head waits until the batch and the pool can take it. */
  private admit(): void {
    let budget = this.maxPrefillTokens;
    let admitted = 0;
    while (this.waiting.length > 0 && this.running.length < this.maxBatch) {
      const seq = this.waiting[0]!;
      const matched = this.pool.match(seq.reusableHashes());
      const prefill = seq.tokens.length - matched.length * this.pool.blockSize;
      if (admitted > 0 && prefill > budget) break;
      const need = seq.blocksNeeded() - matched.length;
      if (!this.pool.canAllocate(need, matched)) break;
      this.pool.acquire(matched);
      seq.blocks = [...matched, ...this.pool.allocate(need)!];
      seq.numCommitted = matched.length;
      seq.numComputed = matched.length * this.pool.blockSize;
      if (seq.cachedTokens < 0) {
        seq.cachedTokens = seq.numComputed;
        this.stats.promptTokens += seq.promptLen;
        this.stats.cachedTokens += seq.cachedTokens;
      }
      this.waiting.shift();
      this.running.push(seq);
      budget -= prefill;
      admitted++;
    }
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

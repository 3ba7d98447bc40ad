/**
 * What the three worker processes say to each other over the ipc:// queues:
 * API → scheduler → detokenizer → API.
 */
import type { SamplingParams } from './engines/engine.js';
import type { CachedBlockInfo } from './cache/block-pool.js';
import type { LoraRef } from './adapters.js';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerateRequest {
  rid: string;
  promptIds: number[];
  maxTokens: number;
  sampling: SamplingParams;
  ignoreEos: boolean;
  /** Stop strings, applied by the detokenizer. */
  stop: string[];
  /** vLLM's `cache_salt` (absent or null: unsalted): enters the first block's hash, so differently salted requests never share cache. */
  cacheSalt?: string | null;
  /** The LoRA adapter the request's `model` named (absent or null: the base model): enters every block's hash. */
  lora?: LoraRef | null;
}

export interface LoadInfo {
  running: number;
  waiting: number;
  /** Prompt tokens of waiting requests not found in the cache. */
  pending_prefill_tokens: number;
  /** Fraction of the pool referenced by running requests. */
  cache_usage: number;
  num_blocks: number;
  /** Blocks an allocation can get: empty ones plus unreferenced cached ones. */
  free_blocks: number;
  cached_blocks: number;
}

export type CtlOp = 'flush' | 'cache' | 'load';
export type CtlResult =
  | { op: 'flush'; ok: boolean; message: string }
  | { op: 'cache'; blocks: CachedBlockInfo[] }
  | { op: 'load'; load: LoadInfo };

/** API → scheduler. */
export type SchedulerInMsg =
  | { type: 'add'; req: GenerateRequest }
  | { type: 'abort'; rid: string }
  | { type: 'ctl'; id: number; op: CtlOp };

/** One request's progress in one scheduler step. */
export interface SeqOutput {
  rid: string;
  ids: number[];
  finish: FinishReason | null;
  /** Only on a request's first output: what the detokenizer needs to start. */
  start?: { promptTokens: number; cachedTokens: number; stop: string[]; promptTail: number[] };
}

/** Scheduler → detokenizer (control replies pass through to the API). */
export type DetokInMsg = { type: 'outs'; outs: SeqOutput[] } | { type: 'ctl'; id: number; result: CtlResult };

export interface TextOutput {
  rid: string;
  text: string;
  finish: FinishReason | null;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  /** The detokenizer found a stop string: the scheduler must still be told to stop. */
  stoppedByString: boolean;
}

/** Detokenizer → API. */
export type ApiInMsg = { type: 'outs'; outs: TextOutput[] } | { type: 'ctl'; id: number; result: CtlResult };

import { availableParallelism } from 'node:os';
import './no-telemetry.js';
import * as ort from 'onnxruntime-node';
import type { Engine, SequenceStep } from '../engine.js';
import { sampleToken } from '../sampler.js';
import { buildDefaultModel, DEFAULT_MODEL, ensureDefaultModel, loadLoraAdapter, loadModelDir, mergeHook, type ModelConfig } from '../../model/index.js';
import { executionProviders, type Device } from './device.js';
import { discoverModelIo, type ModelIo } from './model-io.js';
import { KvPool } from './kv-pool.js';

export interface OnnxEngineOptions {
  /** Tokens per block (default 16). */
  blockSize?: number;
  /** Physical blocks in the KV pool (default 1024). */
  numBlocks?: number;
  device?: Device;
  deviceId?: number;
  /** `--model DIR`: a user's decoder export; without it the generated default model is used. */
  modelDir?: string;
  /** Where the default model is built (default `$KV_ROUTER_CACHE_DIR` or `~/.cache/kv-router`). */
  cacheDir?: string;
  /** Overrides the model's eos ids (e.g. with the tokenizer's). */
  eosTokenIds?: number[];
  /** onnxruntime intra-op threads (default: min(2, cores)). */
  threads?: number;
  /**
   * Longest prefill per session.run; longer ones run in chunks, each reading the previous
   * chunks' keys/values from the pool (bounds the [seq, seq] attention and [seq, vocab]
   * logits memory). Default 2048, or 256 when the model returns logits for every position.
   */
  prefillChunk?: number;
  /** LoRA adapters served by name (--lora NAME=PATH): each merged into its own session of the default model. */
  adapters?: { name: string; path: string }[];
}

interface RunItem {
  seq: SequenceStep;
  index: number;
}

/** Real inference with onnxruntime-node on the standard decoder I/O, its KV in a paged pool. */
export class OnnxEngine implements Engine {
  readonly kind = 'onnx' as const;
  readonly pool: KvPool;

  private constructor(
    private readonly session: ort.InferenceSession,
    /** Adapter name → its merged session (same I/O as the base one; the KV pool is shared, block hashes keep adapters apart). */
    private readonly adapterSessions: Map<string, ort.InferenceSession>,
    readonly io: ModelIo,
    readonly config: Partial<ModelConfig>,
    readonly blockSize: number,
    readonly numBlocks: number,
    readonly eosTokenIds: number[],
    readonly modelPath: string,
    private readonly prefillChunk: number,
  ) {
    this.pool = new KvPool(io.numLayers, io.numKvHeads, io.headDim, blockSize, numBlocks);
  }

  static async create(opts: OnnxEngineOptions = {}): Promise<OnnxEngine> {
    // Checked first: a missing CUDA provider must fail before any model work.
    const providers = executionProviders(opts.device ?? 'cpu', opts.deviceId);
    const model = opts.modelDir
      ? await loadModelDir(opts.modelDir).then((m) => ({ modelPath: m.modelPath, config: m.hints }))
      : await ensureDefaultModel({ cacheDir: opts.cacheDir });
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: providers,
      intraOpNumThreads: opts.threads ?? Math.min(2, availableParallelism()),
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      // The worker's other processes share these few cores: idle ORT threads must sleep, not spin.
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    };
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(model.modelPath, sessionOptions);
    } catch (e) {
      throw new Error(`cannot load ${model.modelPath} on ${opts.device ?? 'cpu'}: ${(e as Error).message}`);
    }
    const adapters = opts.adapters ?? [];
    if (adapters.length > 0 && opts.modelDir) throw new Error(`--lora needs the generated default model: merging an adapter into --model ${opts.modelDir} is not supported`);
    const adapterSessions = new Map<string, ort.InferenceSession>();
    for (const a of adapters) {
      const merge = mergeHook(await loadLoraAdapter(a.path), a.path);
      const vocabSize = model.config.vocabSize;
      if (vocabSize === undefined) throw new Error('the default model config has no vocabSize');
      const bytes = concat(buildDefaultModel({ ...DEFAULT_MODEL, vocabSize }, merge.hook));
      merge.done();
      try {
        adapterSessions.set(a.name, await ort.InferenceSession.create(bytes, sessionOptions));
      } catch (e) {
        throw new Error(`cannot load the default model merged with LoRA adapter ${a.name} (${a.path}): ${(e as Error).message}`);
      }
    }
    const io = discoverModelIo(session, model.config);
    const eos = opts.eosTokenIds ?? model.config.eosTokenIds ?? [];
    const chunk = opts.prefillChunk ?? (io.logitsAllPositions ? 256 : 2048);
    return new OnnxEngine(session, adapterSessions, io, model.config, opts.blockSize ?? 16, opts.numBlocks ?? 1024, eos, model.modelPath, chunk);
  }

  /** Not re-entrant: the scheduler awaits one step before the next (they share the pool). */
  async step(seqs: SequenceStep[]): Promise<number[]> {
    const out = new Array<number>(seqs.length);
    const decodes: RunItem[] = [];
    const singles: RunItem[] = [];
    const canBatch = this.io.hasAttentionMask && this.io.hasPositionIds;
    seqs.forEach((seq, index) => {
      if (seq.newTokens.length === 0) throw new Error(`sequence ${seq.seqId}: no new tokens to compute`);
      const capacity = seq.blockTable.length * this.blockSize;
      if (seq.startPos + seq.newTokens.length > capacity) {
        throw new Error(`sequence ${seq.seqId}: block table covers ${capacity} positions, needs ${seq.startPos + seq.newTokens.length}`);
      }
      (seq.newTokens.length === 1 && canBatch ? decodes : singles).push({ seq, index });
    });
    // Decodes (one new token each) of one adapter share one run, pasts padded to the longest; each prefill runs alone.
    const byAdapter = new Map<string | null, RunItem[]>();
    for (const d of decodes) {
      const k = d.seq.lora ?? null;
      const group = byAdapter.get(k);
      if (group) group.push(d);
      else byAdapter.set(k, [d]);
    }
    for (const group of byAdapter.values()) {
      const tokens = await this.run(group.map((d) => d.seq));
      group.forEach((d, i) => (out[d.index] = tokens[i]));
    }
    for (const { seq, index } of singles) out[index] = await this.prefill(seq);
    return out;
  }

  private async prefill(seq: SequenceStep): Promise<number> {
    const n = seq.newTokens.length;
    for (let from = 0; ; from += this.prefillChunk) {
      const newTokens = seq.newTokens.slice(from, from + this.prefillChunk);
      const last = from + newTokens.length >= n;
      const [token] = await this.run([{ ...seq, newTokens, startPos: seq.startPos + from }], last);
      if (last) return token;
    }
  }

  /** One session.run over sequences with equal new-token counts; past keys/values left-padded to the longest. */
  private async run(seqs: SequenceStep[], sample = true): Promise<number[]> {
    const B = seqs.length;
    const S = seqs[0].newTokens.length;
    const P = Math.max(...seqs.map((s) => s.startPos));
    const T = P + S;
    const { numLayers: L, numKvHeads: H, headDim: HD } = this.io;

    const ids = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    const mask = new BigInt64Array(B * T);
    seqs.forEach((s, b) => {
      const pad = P - s.startPos;
      for (let t = pad; t < T; t++) mask[b * T + t] = 1n;
      for (let i = 0; i < S; i++) {
        ids[b * S + i] = BigInt(s.newTokens[i]);
        pos[b * S + i] = BigInt(s.startPos + i);
      }
    });
    const feeds: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', ids, [B, S]) };
    if (this.io.hasAttentionMask) feeds.attention_mask = new ort.Tensor('int64', mask, [B, T]);
    if (this.io.hasPositionIds) feeds.position_ids = new ort.Tensor('int64', pos, [B, S]);
    if (this.io.hasUseCacheBranch) feeds.use_cache_branch = new ort.Tensor('bool', [P > 0], [1]);
    for (let l = 0; l < L; l++) {
      for (const [kind, pool] of [['key', this.pool.keys[l]], ['value', this.pool.values[l]]] as const) {
        const past = new Float32Array(B * H * P * HD);
        seqs.forEach((s, b) => this.pool.transfer('read', pool, past, b, P, P - s.startPos, s.blockTable, 0, s.startPos));
        feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', past, [B, H, P, HD]);
      }
    }

    const result = await this.sessionFor(seqs[0].lora ?? null).run(feeds);
    try {
      for (let l = 0; l < L; l++) {
        for (const [kind, pool] of [['key', this.pool.keys[l]], ['value', this.pool.values[l]]] as const) {
          const present = result[`present.${l}.${kind}`];
          const data = present.data as Float32Array;
          const time = present.dims[2];
          seqs.forEach((s, b) => this.pool.transfer('write', pool, data, b, time, time - S, s.blockTable, s.startPos, S));
        }
      }
      if (!sample) return [];
      return seqs.map((s, b) => sampleToken(lastLogits(result.logits, b), s.sampling, s.startPos + S));
    } finally {
      for (const t of Object.values(result)) t.dispose();
    }
  }

  private sessionFor(lora: string | null): ort.InferenceSession {
    if (lora === null) return this.session;
    const s = this.adapterSessions.get(lora);
    if (!s) throw new Error(`no LoRA adapter ${lora} is loaded (loaded: ${[...this.adapterSessions.keys()].join(', ') || 'none'})`);
    return s;
  }

  copyBlock(src: number, dst: number): void {
    this.pool.copyBlock(src, dst);
  }

  async close(): Promise<void> {
    await this.session.release();
    for (const s of this.adapterSessions.values()) await s.release();
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Row `b`'s logits at the last position, whether the model returns [B, V], [B, 1, V] or [B, S, V]. */
function lastLogits(logits: ort.Tensor, b: number): Float32Array {
  const data = logits.data as Float32Array;
  const V = logits.dims[logits.dims.length - 1];
  const S = logits.dims.length === 3 ? logits.dims[1] : 1;
  const at = (b * S + S - 1) * V;
  return data.subarray(at, at + V);
}

/**
 * The worker's options: one zod schema for the command line and for config files
 * (configs/worker*.json use the same camelCase keys; the command line wins over the file).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError } from '../src/config/error.js';
import { KVEventsConfigSchema, parseKVEventsConfig, type KVEventsConfig } from '../src/events/config.js';

export { ConfigError };

const int = (min: number) => z.coerce.number().int().min(min);
const positive = () => z.coerce.number().positive();

export const WorkerConfigSchema = z
  .object({
    engine: z.enum(['onnx', 'sim']),
    host: z.string().min(1).default('127.0.0.1'),
    port: int(0).max(65535).default(8100),
    /** The engines' --kv-events-config JSON (string or object); absent = no events published. */
    kvEventsConfig: z.union([z.string(), z.record(z.string(), z.unknown())]).nullable().default(null),
    dpRank: int(0).default(0),
    blockSize: int(1).max(1024).default(16),
    numBlocks: int(1).default(1024),
    /** A directory with an ONNX decoder export (model.onnx); default: the generated model. */
    model: z.string().min(1).nullable().default(null),
    /** A tokenizer.json (tokenizer_config.json next to it is used when present); default: Qwen3's. */
    tokenizer: z.string().min(1).nullable().default(null),
    device: z.enum(['cpu', 'cuda']).default('cpu'),
    /** sim engine: prefill throughput; set (or decodeStepMs) = the older linear timing model instead of the profile. */
    prefillTokensPerS: positive().nullable().default(null),
    /** sim engine: decode step time at batch 1 (grows with batch size); set = the older linear timing model. */
    decodeStepMs: z.coerce.number().min(0).nullable().default(null),
    /** sim engine: divides every step time (2 = twice as fast), for mixed fleets. */
    speedFactor: positive().default(1),
    maxBatch: int(1).default(32),
    /** vLLM's max_num_batched_tokens: tokens computed per step (decodes 1 each, prefill chunks the rest). */
    maxNumBatchedTokens: int(1).default(2048),
    /** Requests allowed to wait for a batch slot or cache blocks; beyond that: 429. */
    maxWaiting: int(0).default(256),
    /** max_tokens when a chat request gives none (completions default to 16, as OpenAI). */
    defaultMaxTokens: int(1).default(256),
    servedModelName: z.string().min(1).nullable().default(null),
    /** LoRA adapters served by name (vLLM's --lora-modules): `NAME=PATH` (onnx: PATH is a PEFT-style adapter dir; sim: PATH optional, ignored). See adapters.ts. */
    lora: z.array(z.string().min(1)).default([]),
    /**
     * On SIGTERM/SIGINT: new requests get 503, requests in flight get this long to finish; streams
     * still open then end with an SSE error event and the worker exits.
     */
    drainTimeoutMs: int(0).default(30_000),
  })
  .strict();

export type WorkerConfig = z.infer<typeof WorkerConfigSchema> & { kvEvents: KVEventsConfig | null };

const FLAGS = {
  engine: 'engine',
  host: 'host',
  port: 'port',
  'kv-events-config': 'kvEventsConfig',
  'dp-rank': 'dpRank',
  'block-size': 'blockSize',
  'num-blocks': 'numBlocks',
  model: 'model',
  tokenizer: 'tokenizer',
  device: 'device',
  'prefill-tokens-per-s': 'prefillTokensPerS',
  'decode-step-ms': 'decodeStepMs',
  'speed-factor': 'speedFactor',
  'max-batch': 'maxBatch',
  'max-num-batched-tokens': 'maxNumBatchedTokens',
  'max-waiting': 'maxWaiting',
  'default-max-tokens': 'defaultMaxTokens',
  'served-model-name': 'servedModelName',
  lora: 'lora',
  'drain-timeout-ms': 'drainTimeoutMs',
} as const;

export const USAGE = `usage: kv-worker --engine onnx|sim [--config FILE] [--host 127.0.0.1] [--port 8100]
  [--kv-events-config JSON] [--dp-rank R] [--block-size 16] [--num-blocks 1024]
  [--model DIR] [--tokenizer FILE] [--device cpu|cuda]
  [--prefill-tokens-per-s X] [--decode-step-ms MS] [--speed-factor 1] [--max-batch 32]
  [--max-num-batched-tokens 2048] [--max-waiting 256]
  [--default-max-tokens 256] [--served-model-name NAME] [--lora NAME=PATH ...] [--drain-timeout-ms 30000] [-h|--help]`;

/** The keys vLLM's KVEventsConfig knows (vllm/config/kv_events.py) plus ours; any other is a typo. */
const KV_EVENTS_KEYS = new Set([...Object.keys(KVEventsConfigSchema.shape), 'enable_kv_cache_events']);

/** Validates a config object (a parsed config file, or file + flags merged). */
export function parseWorkerConfig(raw: unknown, where = 'config'): WorkerConfig {
  const r = WorkerConfigSchema.safeParse(raw);
  if (!r.success) {
    const parts = r.error.issues.flatMap((i) => {
      const key = i.path.join('.');
      if (i.code === 'unrecognized_keys') return i.keys.map((k) => `${key ? `${key}.` : ''}${k}: unknown key`);
      const flag = Object.entries(FLAGS).find(([, k]) => k === key)?.[0];
      return [`${flag ? `--${flag} (${key})` : key || '(config)'}: ${i.message.replace(/\s*\n\s*/g, ' ')}`];
    });
    throw new ConfigError(`invalid ${where}: ${parts.join('; ')} (see kv-worker --help)`);
  }
  let kvEvents: KVEventsConfig | null = null;
  if (r.data.kvEventsConfig !== null) {
    let raw: unknown = r.data.kvEventsConfig;
    try {
      if (typeof raw === 'string') raw = JSON.parse(raw);
    } catch (err) {
      throw new ConfigError(`invalid --kv-events-config (kvEventsConfig): not valid JSON: ${(err as Error).message}`);
    }
    if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
      const unknown = Object.keys(raw).filter((k) => !KV_EVENTS_KEYS.has(k));
      if (unknown.length) throw new ConfigError(`invalid --kv-events-config (kvEventsConfig): ${unknown.map((k) => `kvEventsConfig.${k}: unknown key`).join('; ')} (known: ${[...KV_EVENTS_KEYS].join(', ')})`);
    }
    try {
      kvEvents = parseKVEventsConfig(raw);
    } catch (err) {
      throw new ConfigError(`invalid --kv-events-config (kvEventsConfig): ${(err as Error).message.replace(/\s*\n\s*/g, ' ')}`);
    }
  }
  return { ...r.data, kvEvents };
}

/** Parses argv (without node and script); `--config FILE` is read first, flags override it. */
export function parseWorkerArgs(argv: string[]): WorkerConfig;
export function parseWorkerArgs(argv: string[], opts: { allowHelp: true }): WorkerConfig | 'help';
export function parseWorkerArgs(argv: string[], opts: { allowHelp?: boolean } = {}): WorkerConfig | 'help' {
  const options = {
    ...Object.fromEntries([...Object.keys(FLAGS), 'config'].map((f) => [f, { type: 'string' as const, multiple: f === 'lora' }])),
    help: { type: 'boolean' as const, short: 'h' },
  };
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as {
      values: Record<string, string | string[] | boolean | undefined>;
    });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (see kv-worker --help)`);
  }
  if (values.help) {
    if (opts.allowHelp) return 'help';
    throw new ConfigError('--help is not a config option');
  }
  let fromFile: Record<string, unknown> = {};
  if (typeof values.config === 'string') fromFile = readConfigFile(values.config);
  const merged: Record<string, unknown> = { ...fromFile };
  for (const [flag, key] of Object.entries(FLAGS)) {
    const v = values[flag];
    if (v !== undefined) merged[key] = v;
  }
  return parseWorkerConfig(merged, values.config ? `options (config file ${values.config} + flags)` : 'options');
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`config file ${path} is not a JSON object: ${(err as Error).message}`);
  }
}

/** The model name the API reports and accepts. */
export function modelName(cfg: WorkerConfig): string {
  if (cfg.servedModelName) return cfg.servedModelName;
  if (cfg.model) return cfg.model.replace(/\/+$/, '').split('/').pop() || 'model';
  return cfg.engine === 'sim' ? 'kv-router-sim' : 'kv-router-default';
}

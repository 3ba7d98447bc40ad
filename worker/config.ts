/**
 * The worker's options: one zod schema for the command line and for config files
 * (configs/worker*.json use snake_case keys, flags the same in kebab-case; flags win over the file).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError } from '../src/config/error.js';
import { LOG_FORMATS, LOG_LEVELS } from '../src/log/logger.js';
import { describeIssue } from '../src/config/zod-issues.js';
import { KVEventsConfigSchema, parseKVEventsConfig, type KVEventsConfig } from '../src/events/config.js';

export { ConfigError };

const int = (min: number) => z.coerce.number().int().min(min);
const positive = () => z.coerce.number().positive();

/**
 * The file/JSON keys (snake_case; flags are the same names in kebab-case). Options added here
 * keep their snake_case name inside the code too; the older ones get a camelCase name (INTERNAL).
 */
export const WorkerConfigSchema = z
  .object({
    engine: z.enum(['onnx', 'sim']).describe('The inference engine: `onnx` runs a real decoder (ONNX Runtime); `sim` simulates prefill and decode times with the same cache and events.'),
    host: z.string().min(1).default('127.0.0.1').describe('Bind address of the HTTP API.'),
    port: int(0).max(65535).default(8100).describe('Port of the HTTP API (0: any free port).'),
    kv_events_config: z
      .union([z.string(), z.record(z.string(), z.unknown())])
      .nullable()
      .default(null)
      .describe("The engines' --kv-events-config (vLLM's KVEventsConfig) as a JSON string or object; null: no KV events published."),
    dp_rank: int(0).default(0).describe('Data-parallel rank this worker reports in its events (its event ports are offset by it, as vLLM does).'),
    block_size: int(1).max(1024).default(16).describe('Tokens per KV-cache block.'),
    num_blocks: int(1).default(1024).describe('KV-cache blocks on the device.'),
    model: z.string().min(1).nullable().default(null).describe('A directory with an ONNX decoder export (model.onnx); null: the generated default model.'),
    tokenizer: z.string().min(1).nullable().default(null).describe("A tokenizer.json (tokenizer_config.json next to it is used when present); null: Qwen3's."),
    device: z.enum(['cpu', 'cuda']).default('cpu').describe('onnx engine: where the model runs.'),
    prefill_tokens_per_s: positive().nullable().default(null).describe('sim engine: prefill throughput; set (or decode_step_ms) = the older linear timing model instead of the profile (sim-timing.ts); null: the profile.'),
    decode_step_ms: z.coerce.number().min(0).nullable().default(null).describe('sim engine: decode step time at batch 1 (grows with batch size); set = the older linear timing model; null: the profile.'),
    speed_factor: positive().default(1).describe('sim engine: divides every step time (2 = twice as fast), for mixed fleets.'),
    max_batch: int(1).default(32).describe("Sequences running together (vLLM's max_num_seqs)."),
    max_num_batched_tokens: int(1).default(2048).describe("vLLM's max_num_batched_tokens: tokens computed per step (running decodes take 1 each, prefill chunks the rest)."),
    max_waiting: int(0).default(256).describe('Requests allowed to wait for a batch slot or cache blocks; beyond that: 429.'),
    default_max_tokens: int(1).default(256).describe('max_tokens when a chat request gives none (completions default to 16, as OpenAI).'),
    served_model_name: z.string().min(1).nullable().default(null).describe('The model name the API reports and accepts; null: from the model directory (or kv-router-sim / kv-router-default).'),
    lora: z.array(z.string().min(1)).default([]).describe("LoRA adapters served by name (vLLM's --lora-modules): NAME=PATH (onnx: PATH is a PEFT-style adapter directory; sim: PATH optional, ignored)."),
    drain_timeout_ms: int(0)
      .default(30_000)
      .describe('On SIGTERM/SIGINT: new requests get 503, requests in flight get this long to finish; streams still open then end with an SSE error event and the worker exits.'),
    log_level: z.enum([...LOG_LEVELS, 'off']).nullable().default(null).describe('error | warn | info | debug | off; null: env KV_ROUTER_LOG_LEVEL, else info.'),
    log_format: z.enum(LOG_FORMATS).nullable().default(null).describe('text | json (JSON lines); null: env KV_ROUTER_LOG_FORMAT, else text.'),
  })
  .strict();

/** File key -> the name the code uses, for the options older than the snake_case rule. */
const INTERNAL = {
  kv_events_config: 'kvEventsConfig',
  dp_rank: 'dpRank',
  block_size: 'blockSize',
  num_blocks: 'numBlocks',
  prefill_tokens_per_s: 'prefillTokensPerS',
  decode_step_ms: 'decodeStepMs',
  speed_factor: 'speedFactor',
  max_batch: 'maxBatch',
  max_num_batched_tokens: 'maxNumBatchedTokens',
  max_waiting: 'maxWaiting',
  default_max_tokens: 'defaultMaxTokens',
  served_model_name: 'servedModelName',
  drain_timeout_ms: 'drainTimeoutMs',
} as const;

type FileConfig = z.infer<typeof WorkerConfigSchema>;
type Internal<T> = { [K in keyof T as K extends keyof typeof INTERNAL ? (typeof INTERNAL)[K] : K]: T[K] };

export type WorkerConfig = Internal<FileConfig> & { kvEvents: KVEventsConfig | null };

/** Flags are the file keys in kebab-case. */
const FLAGS: Record<string, string> = Object.fromEntries(Object.keys(WorkerConfigSchema.shape).map((k) => [k.replace(/_/g, '-'), k]));
const CAMEL_HINT = new Map(Object.keys(WorkerConfigSchema.shape).map((k) => [k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()), k]));

export const USAGE = `usage: kv-worker --engine onnx|sim [--config FILE] [--host 127.0.0.1] [--port 8100]
  [--kv-events-config JSON] [--dp-rank R] [--block-size 16] [--num-blocks 1024]
  [--model DIR] [--tokenizer FILE] [--device cpu|cuda]
  [--prefill-tokens-per-s X] [--decode-step-ms MS] [--speed-factor 1] [--max-batch 32]
  [--max-num-batched-tokens 2048] [--max-waiting 256]
  [--default-max-tokens 256] [--served-model-name NAME] [--lora NAME=PATH ...] [--drain-timeout-ms 30000]
  [--log-level error|warn|info|debug] [--log-format text|json] [-h|--help]
Config files (--config) take the same options as snake_case keys (see docs/CONFIG.md).`;

/** The keys vLLM's KVEventsConfig knows (vllm/config/kv_events.py) plus ours; any other is a typo. */
const KV_EVENTS_KEYS = new Set([...Object.keys(KVEventsConfigSchema.shape), 'enable_kv_cache_events']);

/** Validates a config object (a parsed config file, or file + flags merged). */
export function parseWorkerConfig(raw: unknown, where = 'config'): WorkerConfig {
  const r = WorkerConfigSchema.safeParse(raw);
  if (!r.success) {
    const parts = r.error.issues.flatMap((i) => {
      const key = i.path.join('.');
      if (i.code === 'unrecognized_keys') {
        return i.keys.map((k) => `${key ? `${key}.` : ''}${k}: unknown key${!key && CAMEL_HINT.has(k) ? ` (the key is ${CAMEL_HINT.get(k)})` : ''}`);
      }
      const flag = Object.entries(FLAGS).find(([, k]) => k === key)?.[0];
      return [`${flag ? `--${flag} (${key})` : key || '(config)'}: ${describeIssue(i, raw)}`];
    });
    throw new ConfigError(`invalid ${where}: ${parts.join('; ')} (see kv-worker --help)`);
  }
  let kvEvents: KVEventsConfig | null = null;
  if (r.data.kv_events_config !== null) {
    let raw: unknown = r.data.kv_events_config;
    try {
      if (typeof raw === 'string') raw = JSON.parse(raw);
    } catch (err) {
      throw new ConfigError(`invalid --kv-events-config (kv_events_config): not valid JSON: ${(err as Error).message}`);
    }
    if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
      const unknown = Object.keys(raw).filter((k) => !KV_EVENTS_KEYS.has(k));
      if (unknown.length) throw new ConfigError(`invalid --kv-events-config (kv_events_config): ${unknown.map((k) => `kv_events_config.${k}: unknown key`).join('; ')} (known: ${[...KV_EVENTS_KEYS].join(', ')})`);
    }
    try {
      kvEvents = parseKVEventsConfig(raw);
    } catch (err) {
      throw new ConfigError(`invalid --kv-events-config (kv_events_config): ${(err as Error).message.replace(/\s*\n\s*/g, ' ')}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r.data)) out[(INTERNAL as Record<string, string>)[k] ?? k] = v;
  return { ...(out as Internal<FileConfig>), kvEvents };
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

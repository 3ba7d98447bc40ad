import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError, formatIssues } from '../src/config/error.js';
import { endpointProblem } from '../src/events/config.js';
import { CurveConfigSchema } from '../src/events/curve.js';

export { ConfigError };

/** A ZeroMQ endpoint: tcp://host:port, ipc://path or inproc://name. */
const EndpointSchema = z.string().min(1).superRefine((ep, ctx) => {
  const why = endpointProblem(ep);
  if (why) ctx.addIssue({ code: 'custom', message: why });
});

/** Where a tokenizer comes from: the default (Qwen3, as our workers use) or a user's files. */
export const TokenizerSpecSchema = z.union([
  z.literal('default'),
  z.object({
    tokenizer_json: z.string().min(1),
    tokenizer_config: z.string().min(1).optional(),
  }).strict(),
]);
export type TokenizerSpec = z.infer<typeof TokenizerSpecSchema>;

/**
 * The KV-event stream of one worker, in the engines' --kv-events-config form: the keys vLLM's
 * KVEventsConfig knows (vllm/config/kv_events.py) are accepted so an engine's JSON can be pasted
 * as is; the publisher-only ones are ignored here; any other key is a typo and rejected.
 */
export const WorkerEventsSchema = z.object({
  publisher: z.string().optional(),
  endpoint: EndpointSchema,
  replay_endpoint: EndpointSchema.nullable().optional(),
  topic: z.string().default(''),
  enable_kv_cache_events: z.boolean().optional(),
  buffer_steps: z.number().int().min(0).optional(),
  hwm: z.number().int().min(0).optional(),
  max_queue_size: z.number().int().min(1).optional(),
  /** CURVE keys (ours, not the engines'): see src/events/curve.ts. */
  curve: CurveConfigSchema.optional(),
  /**
   * Ours, not the engines': how legacy array events are read. `sglang`: SGLang's layout, where
   * `cache_salt`, `session_id` follow `medium` (vLLM has `lora_name`, `extra_keys` there); `auto`
   * tells them apart only when a session_id is present. Default auto.
   */
  array_layout: z.enum(['auto', 'vllm', 'sglang']).optional(),
}).strict();

export const WorkerSchema = z.object({
  /** Stable id; defaults to host:port of the url. */
  id: z.string().regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits, . _ : - only').optional(),
  /** HTTP base URL of the OpenAI server, e.g. http://10.0.0.5:8100 */
  url: z.string().url(),
  /**
   * The worker's event stream. Bind-form hosts (*, 0.0.0.0, ::) are replaced by the url's host.
   * Rank r's ports are the rank-0 ports plus r, as the engines offset them.
   * Absent: the worker is routed to without cache knowledge (cache score 0).
   */
  kv_events: WorkerEventsSchema.nullable().optional(),
  /** Data-parallel ranks behind this url: a count (0..n-1) or an explicit list. */
  dp_ranks: z.union([z.number().int().min(1).max(1024), z.array(z.number().int().min(0)).min(1)]).default(1),
  /** Block size of the worker's KV cache (tokens), used for provisional entries until events say otherwise. */
  block_size: z.number().int().min(1).default(16),
  /** Tokenizer override for this worker; defaults to the router's. */
  tokenizer: TokenizerSpecSchema.optional(),
}).strict();
export type WorkerConfig = z.infer<typeof WorkerSchema>;
export type WorkerInput = z.input<typeof WorkerSchema>;

/** What every discovered worker shares: a WorkerConfig without id and url (those come from the address). */
const WorkerTemplateSchema = WorkerSchema.omit({ id: true, url: true }).extend({
  scheme: z.enum(['http', 'https']).default('http'),
}).strict();
export type WorkerTemplate = z.infer<typeof WorkerTemplateSchema>;

/** Workers that come and go (router/discovery/): each source gives its full set; `workers` above is the static one. */
export const DiscoveryConfigSchema = z.object({
  /** A JSON file {"workers": [...]} re-read when it changes; a bad edit keeps the last good set. */
  file: z.object({
    path: z.string().min(1),
    /** Re-read at least this often (a backstop for file systems without change events). */
    poll_ms: z.number().int().min(10).default(2000),
  }).strict().nullable().default(null),
  /** The A/AAAA or SRV records of a name (e.g. a Kubernetes headless Service), re-resolved periodically. */
  dns: z.object({
    name: z.string().min(1),
    record: z.enum(['A', 'AAAA', 'A+AAAA', 'SRV']).default('A+AAAA'),
    /** The workers' HTTP port (A/AAAA; SRV records carry their own). */
    port: z.number().int().min(1).max(65535).optional(),
    interval_ms: z.number().int().min(100).default(5000),
    timeout_ms: z.number().int().min(10).default(2000),
    /** Name servers ("ip" or "ip:port"); default: the system's. */
    servers: z.array(z.string().min(1)).min(1).optional(),
    worker: WorkerTemplateSchema.prefault({}),
  }).strict().superRefine((d, ctx) => {
    if (d.record !== 'SRV' && d.port === undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: `required with record ${d.record}` });
  }).nullable().default(null),
  /** EndpointSlices selected by label (list + watch): ready endpoints only, the port named port_name. */
  kubernetes: z.object({
    /** Default: the pod's own namespace (service account), else "default". */
    namespace: z.string().min(1).optional(),
    label_selector: z.string().min(1),
    port_name: z.string().min(1),
    /** An API server URL without auth (kubectl proxy, tests); default: in-cluster or ~/.kube/config. */
    api_server: z.string().url().optional(),
    kubeconfig: z.string().min(1).optional(),
    worker: WorkerTemplateSchema.prefault({}),
  }).strict().nullable().default(null),
  /** A leaving worker gets no new requests at once and is removed when its requests finish, or after this long. */
  drain_timeout_ms: z.number().int().min(0).default(30_000),
}).strict();
export type DiscoveryConfig = z.infer<typeof DiscoveryConfigSchema>;

export const PolicyNameSchema = z.enum(['cache_aware', 'round_robin', 'random', 'least_load', 'approx_tree', 'power_of_two', 'prefix_hash']);
export type PolicyName = z.infer<typeof PolicyNameSchema>;

export const RouterConfigSchema = z.object({
  /** Free text: what this config is for, engine flags to match, etc. Ignored by the router. */
  description: z.string().optional(),
  host: z.string().default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(8000),
  policy: PolicyNameSchema.default('cache_aware'),
  /** Bearer key for /workers routes. Also read from KV_ROUTER_ADMIN_KEY. */
  admin_key: z.string().min(1).nullable().default(null),
  tokenizer: TokenizerSpecSchema.default('default'),
  /** Worker threads for tokenization (0: tokenize on the main thread). */
  tokenizer_threads: z.number().int().min(0).max(64).default(2),
  cache_aware: z.object({
    /**
     * Weight of one uncached prompt token (prefill still to compute). Above the queued weight: an
     * uncached token is work the fleet adds (it delays every later request there too, and its copy
     * evicts other prefixes), while a queued token only delays this request.
     */
    prefill_weight: z.number().min(0).default(6),
    /** Weight of one prefill token already queued on the worker. */
    queued_prefill_weight: z.number().min(0).default(1),
    /** Cost, in prefill-token equivalents, of one request already decoding on the worker. */
    decode_weight: z.number().min(0).default(256),
    /** How long a routed prompt counts as cached on the chosen worker before events confirm it. */
    provisional_ttl_ms: z.number().int().min(0).default(2000),
    /** Costs within this many tokens of the best count as ties (spread by in-flight, then random). */
    tie_tolerance: z.number().min(0).default(0),
    /**
     * Hot-spot guard: when the prompt's matched prefix is hot (at least hot_prefix_requests routed
     * requests shared it within hot_prefix_window_ms) and some workers hold over half the prompt
     * that others lack, a worker with more requests in flight than the mean by more than
     * balance_abs_threshold and by more than balance_rel_threshold times is ranked after all others,
     * however much of the prompt it holds, so one shared prefix cannot pile every request onto one
     * worker. A prefix only one conversation uses never triggers it: its next turn is worth some queueing.
     */
    balance_abs_threshold: z.number().min(0).default(2),
    balance_rel_threshold: z.number().min(1).default(1.25),
    hot_prefix_requests: z.number().int().min(1).default(4),
    hot_prefix_window_ms: z.number().int().min(1).default(5000),
  }).strict().prefault({}),
  approx_tree: z.object({
    /** Blocks remembered per worker (LRU). */
    max_blocks_per_worker: z.number().int().min(1).default(200_000),
    /** Forget a routed block after this long (0: never). */
    ttl_ms: z.number().int().min(0).default(120_000),
    block_size: z.number().int().min(1).default(16),
  }).strict().prefault({}),
  /** Consistent hashing of the prompt's first tokens (defaults: SGLang Model Gateway's prefix_hash). */
  prefix_hash: z.object({
    /** Leading prompt tokens hashed: prompts sharing these go to the same worker. */
    prefix_tokens: z.number().int().min(1).default(256),
    /** The owner is passed over when its in-flight count exceeds the mean (this request included) this many times. */
    load_factor: z.number().min(1).default(1.25),
    /** Ring points per worker. */
    virtual_nodes: z.number().int().min(1).max(10_000).default(150),
  }).strict().prefault({}),
  health: z.object({
    interval_ms: z.number().int().min(10).default(1000),
    timeout_ms: z.number().int().min(10).default(1000),
    /** Consecutive failed probes (or failed requests) that take a worker out of rotation. */
    failure_threshold: z.number().int().min(1).default(3),
    /** Also poll GET /load for the worker's own queue (ignored if the worker has none). */
    poll_load: z.boolean().default(true),
    /**
     * An engine stuck behind a /health that still answers: when a streamed request has waited this
     * long for its first byte and no response from that worker has moved meanwhile, the worker leaves
     * rotation (its waiting requests move to other workers) and stays out at least this long,
     * doubling while it keeps stalling (0: off). Non-streamed requests only show progress at their
     * end, so they are bounded by upstream_header_timeout_ms instead.
     */
    stall_timeout_ms: z.number().int().min(0).default(60_000),
  }).strict().prefault({}),
  retry: z.object({
    /** Total attempts per request, first one included. */
    max_attempts: z.number().int().min(1).max(10).default(3),
    backoff_ms: z.number().int().min(0).default(25),
    /** Router-wide retry budget: retries per request on average (every request deposits this share of one)... */
    budget_ratio: z.number().min(0).max(10).default(0.2),
    /** ...plus this many retries per second whatever the traffic (so a quiet router still retries). */
    budget_min_per_s: z.number().min(0).default(10),
  }).strict().prefault({}),
  /** Append one JSON line per routed request (candidates, matched tokens, load, cost terms) to this file. */
  decision_log: z.string().min(1).nullable().default(null),
  /** Request timeout to a worker until its response headers arrive (ms). */
  upstream_header_timeout_ms: z.number().int().min(100).default(600_000),
  max_body_bytes: z.number().int().min(1024).default(64 * 1024 * 1024),
  /**
   * Connect mode for KV events: the router binds this SUB endpoint (rank r: port + r) and the
   * engines connect to it (their endpoint names the router's host, e.g. tcp://router:5557), each
   * worker with its own kv_events.topic; replays still go to each worker's replay_endpoint.
   * null: the router connects to every worker's endpoint (the engines bind).
   */
  events_bind: EndpointSchema.nullable().default(null),
  /**
   * On SIGTERM/SIGINT: new requests get 503 at once, requests in flight get this long to finish;
   * streams still open then end with an SSE error event (never mid-event) and the router exits.
   */
  drain_timeout_ms: z.number().int().min(0).default(30_000),
  /**
   * Several replicas acting as one router: each publishes its own in-flight load and provisional
   * prefixes over NATS and merges the others'. null (default): a single router, nothing shared.
   */
  cluster: z.object({
    /** e.g. nats://127.0.0.1:4222 (several: comma-separated). */
    nats_url: z.string().min(1),
    /** This replica's name; a random suffix is always added, so a restarted replica rejoins as a new one. Default: random. */
    replica_id: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ - only (a NATS subject token)').optional(),
    /** Subjects are <prefix>.load.<replica> and <prefix>.prov.<replica>. */
    subject_prefix: z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, 'dot-separated tokens of letters, digits, _ -').default('kv-router'),
    /** How often each replica restates its whole share (and drops expired peers). */
    heartbeat_ms: z.number().int().min(10).default(1000),
    /** A peer's share counts this long after its last message (a dead replica's share vanishes after it). */
    share_ttl_ms: z.number().int().min(20).default(3000),
    /** Also share provisional prefixes (routed, not yet seen in events). */
    share_provisional: z.boolean().default(true),
    /** Wait between connection attempts while NATS is unreachable. */
    reconnect_ms: z.number().int().min(10).default(1000),
    connect_timeout_ms: z.number().int().min(10).default(2000),
  }).strict().refine((c) => c.share_ttl_ms > c.heartbeat_ms, { message: 'share_ttl_ms must exceed heartbeat_ms', path: ['share_ttl_ms'] }).nullable().default(null),
  workers: z.array(WorkerSchema).default([]),
  discovery: DiscoveryConfigSchema.prefault({}),
}).strict();
export type RouterConfig = z.infer<typeof RouterConfigSchema>;
export type RouterConfigInput = z.input<typeof RouterConfigSchema>;

/** zod issues as one line: "invalid <where>: path: message; path: unknown key". */
export function formatZodError(err: z.ZodError, where = 'config'): string {
  return formatIssues(err.issues, where);
}

export function parseRouterConfig(input: unknown, where = 'config'): RouterConfig {
  const r = RouterConfigSchema.safeParse(input);
  if (!r.success) throw new ConfigError(formatZodError(r.error, where));
  const ids = new Set<string>();
  for (const w of r.data.workers) {
    const id = workerIdOf(w);
    if (ids.has(id)) throw new ConfigError(`invalid ${where}: workers: duplicate worker id "${id}"`);
    ids.add(id);
  }
  return r.data;
}

export function parseWorker(input: unknown): WorkerConfig {
  const r = WorkerSchema.safeParse(input);
  if (!r.success) throw new ConfigError(formatZodError(r.error, 'worker'));
  return r.data;
}

export async function loadRouterConfigFile(path: string): Promise<RouterConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  return parseRouterConfig(json, `config file ${path}`);
}

export function workerIdOf(w: Pick<WorkerConfig, 'id' | 'url'>): string {
  if (w.id) return w.id;
  const u = new URL(w.url);
  return `${u.hostname}:${u.port || (u.protocol === 'https:' ? '443' : '80')}`;
}

export function ranksOf(w: Pick<WorkerConfig, 'dp_ranks'>): number[] {
  return typeof w.dp_ranks === 'number' ? Array.from({ length: w.dp_ranks }, (_, i) => i) : [...w.dp_ranks];
}

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
    tokenizer_json: z.string().min(1).describe("Path of a tokenizer.json."),
    tokenizer_config: z.string().min(1).optional().describe("Path of its tokenizer_config.json (chat template, special tokens)."),
  }).strict(),
]);
export type TokenizerSpec = z.infer<typeof TokenizerSpecSchema>;

/** Transfer rates of cache tiers, tokens/s by medium name (router/cost/tiers.ts). */
const TierRatesSchema = z.record(z.string().min(1), z.number().positive());

/**
 * The KV-event stream of one worker, in the engines' --kv-events-config form: the keys vLLM's
 * KVEventsConfig knows (vllm/config/kv_events.py) are accepted so an engine's JSON can be pasted
 * as is; the publisher-only ones are ignored here; any other key is a typo and rejected.
 */
export const WorkerEventsSchema = z.object({
  publisher: z.string().optional().describe("Publisher-side (ignored here)."),
  endpoint: EndpointSchema.describe("The worker's PUB endpoint the router subscribes to."),
  replay_endpoint: EndpointSchema.nullable().optional().describe("Its replay endpoint, asked for the batches missed in a gap."),
  topic: z.string().default('').describe("Topic prefix to subscribe to."),
  enable_kv_cache_events: z.boolean().optional().describe("vLLM's flag (ignored here)."),
  buffer_steps: z.number().int().min(0).optional().describe("Publisher-side (ignored here)."),
  hwm: z.number().int().min(0).optional().describe("Publisher-side (ignored here)."),
  max_queue_size: z.number().int().min(1).optional().describe("Publisher-side (ignored here)."),
  curve: CurveConfigSchema.optional().describe("CURVE keys (ours, not the engines'): see src/events/curve.ts."),
  array_layout: z.enum(['auto', 'vllm', 'sglang']).optional().describe("Ours, not the engines': how legacy array events are read. `sglang`: SGLang's layout, where `cache_salt`, `session_id` follow `medium` (vLLM has `lora_name`, `extra_keys` there); `auto` (absent) tells them apart only when a session_id is present."),
}).strict();

export const WorkerSchema = z.object({
  id: z.string().regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits, . _ : - only').optional().describe("Stable id; defaults to host:port of the url."),
  url: z.string().url().describe("HTTP base URL of the OpenAI server, e.g. http://10.0.0.5:8100"),
  kv_events: WorkerEventsSchema.nullable().optional().describe("The worker's event stream. Bind-form hosts (*, 0.0.0.0, ::) are replaced by the url's host. Rank r's ports are the rank-0 ports plus r, as the engines offset them. Absent: the worker is routed to without cache knowledge (cache score 0)."),
  dp_ranks: z.union([z.number().int().min(1).max(1024), z.array(z.number().int().min(0)).min(1)]).default(1).describe("Data-parallel ranks behind this url: a count (0..n-1) or an explicit list."),
  block_size: z.number().int().min(1).default(16).describe("Block size of the worker's KV cache (tokens), used for provisional entries until events say otherwise."),
  tokenizer: TokenizerSpecSchema.optional().describe("Tokenizer override for this worker; defaults to the router's."),
  tiers: TierRatesSchema.optional().describe("This worker's transfer rates of slower cache tiers (tokens/s by medium, e.g. {\"CPU\": 400000}), over cache_aware.tiers and the defaults (router/cost/tiers.ts)."),
}).strict();
export type WorkerConfig = z.infer<typeof WorkerSchema>;
export type WorkerInput = z.input<typeof WorkerSchema>;

/** What every discovered worker shares: a WorkerConfig without id and url (those come from the address). */
const WorkerTemplateSchema = WorkerSchema.omit({ id: true, url: true }).extend({
  scheme: z.enum(['http', 'https']).default('http').describe("Scheme of the discovered workers' URLs."),
}).strict();
export type WorkerTemplate = z.infer<typeof WorkerTemplateSchema>;

/** Workers that come and go (router/discovery/): each source gives its full set; `workers` above is the static one. */
export const DiscoveryConfigSchema = z.object({
  file: z.object({
    path: z.string().min(1).describe("The workers file."),
    poll_ms: z.number().int().min(10).default(2000).describe("Re-read at least this often (a backstop for file systems without change events)."),
  }).strict().nullable().default(null).describe("A JSON file {\"workers\": [...]} re-read when it changes; a bad edit keeps the last good set."),
  dns: z.object({
    name: z.string().min(1).describe("The DNS name to resolve."),
    record: z.enum(['A', 'AAAA', 'A+AAAA', 'SRV']).default('A+AAAA').describe("Which records to ask for."),
    port: z.number().int().min(1).max(65535).optional().describe("The workers' HTTP port (A/AAAA; SRV records carry their own)."),
    interval_ms: z.number().int().min(100).default(5000).describe("Re-resolve this often."),
    timeout_ms: z.number().int().min(10).default(2000).describe("Timeout of one lookup."),
    servers: z.array(z.string().min(1)).min(1).optional().describe("Name servers (\"ip\" or \"ip:port\"); default: the system's."),
    worker: WorkerTemplateSchema.prefault({}).describe("What every discovered worker shares: the keys of `workers[]` without id and url (those come from the address), plus scheme."),
  }).strict().superRefine((d, ctx) => {
    if (d.record !== 'SRV' && d.port === undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: `required with record ${d.record}` });
  }).nullable().default(null).describe("The A/AAAA or SRV records of a name (e.g. a Kubernetes headless Service), re-resolved periodically."),
  kubernetes: z.object({
    namespace: z.string().min(1).optional().describe("Default: the pod's own namespace (service account), else \"default\"."),
    label_selector: z.string().min(1).describe("Label selector of the EndpointSlices, e.g. app=kv-worker."),
    port_name: z.string().min(1).describe("Name of the HTTP port in the EndpointSlices."),
    api_server: z.string().url().optional().describe("An API server URL without auth (kubectl proxy, tests); default: in-cluster or ~/.kube/config."),
    kubeconfig: z.string().min(1).optional().describe("A kubeconfig file; default: in-cluster, else ~/.kube/config."),
    worker: WorkerTemplateSchema.prefault({}).describe("What every discovered worker shares: the keys of `workers[]` without id and url (those come from the address), plus scheme."),
  }).strict().nullable().default(null).describe("EndpointSlices selected by label (list + watch): ready endpoints only, the port named port_name."),
  drain_timeout_ms: z.number().int().min(0).default(30_000).describe("A leaving worker gets no new requests at once and is removed when its requests finish, or after this long."),
}).strict();
export type DiscoveryConfig = z.infer<typeof DiscoveryConfigSchema>;

/** Worker speeds for cache_aware's ttft cost: the prior every worker starts from, or a fixed override. */
const RateFields = {
  prefill_tokens_per_s: z.number().positive().describe("Prefill throughput of uncached prompt tokens."),
  overhead_ms: z.number().min(0).describe("Time to first token of an empty request on an idle worker (HTTP, scheduling, one step)."),
  ms_per_running_request: z.number().min(0).describe("Time to first token added by each request running there."),
  ms_per_waiting_request: z.number().min(0).describe("Time to first token added by each request waiting there, beyond its prefill tokens (those count in the wait): scheduling only in an engine that batches all waiting prefills into its steps."),
  decode_step_ms: z.number().min(0).describe("Inter-token gap at batch 1."),
  decode_ms_per_sequence: z.number().min(0).describe("Inter-token gap added per sequence in the batch."),
};
const RatePriorSchema = z.object({
  prefill_tokens_per_s: RateFields.prefill_tokens_per_s.default(20_000),
  overhead_ms: RateFields.overhead_ms.default(5),
  ms_per_running_request: RateFields.ms_per_running_request.default(1),
  ms_per_waiting_request: RateFields.ms_per_waiting_request.default(1),
  decode_step_ms: RateFields.decode_step_ms.default(10),
  decode_ms_per_sequence: RateFields.decode_ms_per_sequence.default(0.2),
}).strict();
const TtftCostSchema = z.object({
  prior: RatePriorSchema.prefault({}).describe("The rates every worker starts from until it has min_samples observations (then the fleet median, then its own)."),
  min_samples: z.number().int().min(1).default(8).describe("Observations of a worker before its learned rates replace the prior."),
  window: z.number().int().min(4).max(4096).default(64).describe("Observations per worker the online fit keeps (older ones are forgotten)."),
  fleet_pooling: z.number().min(0).max(1).default(1).describe("How far (0..1) each worker's rates go from its own fit to the fleet's median fit scaled by the worker's measured speed (median of measured / fleet-predicted TTFT): noise must not tell identical workers apart, a really faster one still stands out."),
  delay_weight: z.number().min(0).default(0).describe("Weight of the delay this request's prefill adds to each request decoding on the worker (their inter-token gap, which no TTFT sees). Off by default: charged per worker it sent big cold prompts to whichever worker had the fewest decodes (often the one with the most prefills waiting: three 24-69k-token prompts stacked there at 4.5 s TTFT on the Mooncake run); delay_to_waiting and delay_to_later price a miss for the fleet instead."),
  waiting_weight: z.number().min(0).default(1).describe("Weight of the delay this request's prefill adds to the requests already on the worker without a first token: an engine whose token budget admits every waiting prefill into its next step (max_num_batched_tokens above the queue) makes each of them wait it out too. With vLLM's chunked prefill (admission in order, 2048-token budget) set it near 0."),
  later_weight: z.number().min(0).default(2).describe("Weight of the delay this request's prefill adds to the requests that will queue behind it on the worker (counted as the fleet's mean of requests waiting for a first token per worker). It is what a miss costs the fleet beyond its own time; 0 prices each request alone. On the Mooncake run (one router, delay_weight 0.2) 1 gave 89% of the hit-rate bound, 2 and 4 gave 92-93% (0 gave 81%)."),
  tie_tolerance_ms: z.number().min(0).default(1).describe("Costs within this many ms of each other are ties."),
  workers: z.record(z.string().min(1), z.object(RateFields).partial().strict()).default({}).describe('Fixed rates by worker id (no learning for that worker): e.g. {"gpu-a": {"prefill_tokens_per_s": 40000}}.'),
}).strict();

export const PolicyNameSchema = z.enum(['cache_aware', 'round_robin', 'random', 'least_load', 'approx_tree', 'power_of_two', 'prefix_hash']);
export type PolicyName = z.infer<typeof PolicyNameSchema>;

export const RouterConfigSchema = z.object({
  description: z.string().optional().describe("Free text: what this config is for, engine flags to match, etc. Ignored by the router."),
  host: z.string().default('127.0.0.1').describe("Bind address."),
  port: z.number().int().min(0).max(65535).default(8000).describe("Port (0: any free port)."),
  policy: PolicyNameSchema.default('cache_aware').describe("How a worker is picked: cache_aware (KV-event index + load cost), approx_tree (the router's own guess of caches), prefix_hash (consistent hashing of the prompt's start), power_of_two, least_load, round_robin, random."),
  admin_key: z.string().min(1).nullable().default(null).describe("Bearer key for /workers routes. Also read from KV_ROUTER_ADMIN_KEY."),
  tokenizer: TokenizerSpecSchema.default('default').describe("The tokenizer the router uses to match prompts to cached blocks: \"default\" (Qwen3's, as our workers use) or the files of the workers' model."),
  tokenizer_threads: z.number().int().min(0).max(64).default(2).describe("Worker threads for tokenization (0: tokenize on the main thread)."),
  cache_aware: z.object({
    prefill_weight: z.number().min(0).default(6).describe("Weight of one uncached prompt token (prefill still to compute). Above the queued weight: an uncached token is work the fleet adds (it delays every later request there too, and its copy evicts other prefixes), while a queued token only delays this request."),
    queued_prefill_weight: z.number().min(0).default(1).describe("Weight of one prefill token already queued on the worker."),
    decode_weight: z.number().min(0).default(256).describe("Cost, in prefill-token equivalents, of one request already decoding on the worker."),
    provisional_ttl_ms: z.number().int().min(0).default(2000).describe("How long a routed prompt counts as cached on the chosen worker before events confirm it."),
    tie_tolerance: z.number().min(0).default(0).describe("Costs within this many tokens of the best count as ties (spread by in-flight, then random)."),
    balance_abs_threshold: z.number().min(0).default(2).describe("Hot-spot guard: when the prompt's matched prefix is hot (at least hot_prefix_requests routed requests shared it within hot_prefix_window_ms) and some workers hold over half the prompt that others lack, a worker with more requests in flight than the mean by more than balance_abs_threshold and by more than balance_rel_threshold times is ranked after all others, however much of the prompt it holds, so one shared prefix cannot pile every request onto one worker. A prefix only one conversation uses never triggers it: its next turn is worth some queueing."),
    balance_rel_threshold: z.number().min(1).default(1.25).describe("Hot-spot guard: the relative excess over the mean in-flight count (see balance_abs_threshold)."),
    hot_prefix_requests: z.number().int().min(1).default(4).describe("Hot-spot guard: requests sharing a prefix within hot_prefix_window_ms that make it hot."),
    hot_prefix_window_ms: z.number().int().min(1).default(5000).describe("Hot-spot guard: the window of hot_prefix_requests."),
    cost: z.enum(['ttft', 'weighted']).default('weighted').describe('"ttft": cost = predicted time to first token in ms plus the delay added to the requests already there, at each worker\'s rates learned online (router/cost/); hot prefixes are copied when waiting at the holder takes longer than recomputing elsewhere (no balance thresholds). "weighted": the token-weighted sum with the balance-threshold guard.'),
    ttft: TtftCostSchema.prefault({}).describe('Settings of the "ttft" cost.'),
    tiers: TierRatesSchema.default({}).describe("A hit in a slower tier costs its load time: tokens/s by medium name (case-insensitive) over the defaults GPU free, CPU 190000, DISK 38000 (any other medium: as DISK); see router/cost/tiers.ts."),
  }).strict().prefault({}).describe("The cache_aware policy: cost = prefill_weight x uncached tokens + queued_prefill_weight x queued prefill + decode_weight x decoding requests; the lowest wins."),
  approx_tree: z.object({
    max_blocks_per_worker: z.number().int().min(1).default(200_000).describe("Blocks remembered per worker (LRU)."),
    ttl_ms: z.number().int().min(0).default(120_000).describe("Forget a routed block after this long (0: never)."),
    block_size: z.number().int().min(1).default(16).describe("Block size of the router's guess (tokens)."),
  }).strict().prefault({}).describe("The approx_tree policy: the router remembers what it routed where, without events."),
  prefix_hash: z.object({
    prefix_tokens: z.number().int().min(1).default(256).describe("Leading prompt tokens hashed: prompts sharing these go to the same worker."),
    load_factor: z.number().min(1).default(1.25).describe("The owner is passed over when its in-flight count exceeds the mean (this request included) this many times."),
    virtual_nodes: z.number().int().min(1).max(10_000).default(150).describe("Ring points per worker."),
  }).strict().prefault({}).describe("Consistent hashing of the prompt's first tokens (defaults: SGLang Model Gateway's prefix_hash)."),
  health: z.object({
    interval_ms: z.number().int().min(10).default(1000).describe("Probe every worker's GET /health this often."),
    timeout_ms: z.number().int().min(10).default(1000).describe("Timeout of one probe."),
    failure_threshold: z.number().int().min(1).default(3).describe("Consecutive failed probes (or failed requests) that take a worker out of rotation."),
    poll_load: z.boolean().default(true).describe("Also poll GET /load for the worker's own queue (ignored if the worker has none)."),
    stall_timeout_ms: z.number().int().min(0).default(60_000).describe("An engine stuck behind a /health that still answers: when a streamed request has waited this long for its first byte and no response from that worker has moved meanwhile, the worker leaves rotation (its waiting requests move to other workers) and stays out at least this long, doubling while it keeps stalling (0: off). Non-streamed requests only show progress at their end, so they are bounded by upstream_header_timeout_ms instead."),
    models_refresh_ms: z.number().int().min(0).default(10_000).describe("GET /v1/models is read again this often while a worker is in rotation (adapters loaded at runtime, e.g. vLLM's /v1/load_lora_adapter); 0: only on entering rotation."),
  }).strict().prefault({}).describe("Health probes and when a worker leaves rotation."),
  retry: z.object({
    max_attempts: z.number().int().min(1).max(10).default(3).describe("Total attempts per request, first one included."),
    backoff_ms: z.number().int().min(0).default(25).describe("Wait before a retry (doubling per attempt)."),
    budget_ratio: z.number().min(0).max(10).default(0.2).describe("Router-wide retry budget: retries per request on average (every request deposits this share of one)..."),
    budget_min_per_s: z.number().min(0).default(10).describe("...plus this many retries per second whatever the traffic (so a quiet router still retries)."),
  }).strict().prefault({}).describe("Retries of a failed request on another worker (before any byte reached the client)."),
  decision_log: z.string().min(1).nullable().default(null).describe("Append one JSON line per routed request (candidates, matched tokens, load, cost terms) to this file."),
  upstream_header_timeout_ms: z.number().int().min(100).default(600_000).describe("Request timeout to a worker until its response headers arrive (ms)."),
  max_body_bytes: z.number().int().min(1024).default(64 * 1024 * 1024).describe("Largest request body accepted (413 beyond)."),
  events_bind: EndpointSchema.nullable().default(null).describe("Connect mode for KV events: the router binds this SUB endpoint (rank r: port + r) and the engines connect to it (their endpoint names the router's host, e.g. tcp://router:5557), each worker with its own kv_events.topic; replays still go to each worker's replay_endpoint. null: the router connects to every worker's endpoint (the engines bind)."),
  drain_timeout_ms: z.number().int().min(0).default(30_000).describe("On SIGTERM/SIGINT: new requests get 503 at once, requests in flight get this long to finish; streams still open then end with an SSE error event (never mid-event) and the router exits."),
  cluster: z.object({
    nats_url: z.string().min(1).describe("e.g. nats://127.0.0.1:4222 (several: comma-separated)."),
    replica_id: z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ - only (a NATS subject token)').optional().describe("This replica's name; a random suffix is always added, so a restarted replica rejoins as a new one. Default: random."),
    subject_prefix: z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, 'dot-separated tokens of letters, digits, _ -').default('kv-router').describe("Subjects are <prefix>.load.<replica> and <prefix>.prov.<replica>."),
    heartbeat_ms: z.number().int().min(10).default(1000).describe("How often each replica restates its whole share (and drops expired peers)."),
    share_ttl_ms: z.number().int().min(20).default(3000).describe("A peer's share counts this long after its last message (a dead replica's share vanishes after it)."),
    share_provisional: z.boolean().default(true).describe("Also share provisional prefixes (routed, not yet seen in events)."),
    reconnect_ms: z.number().int().min(10).default(1000).describe("Wait between connection attempts while NATS is unreachable."),
    connect_timeout_ms: z.number().int().min(10).default(2000).describe("Timeout of one connection attempt to NATS."),
  }).strict().refine((c) => c.share_ttl_ms > c.heartbeat_ms, { message: 'share_ttl_ms must exceed heartbeat_ms', path: ['share_ttl_ms'] }).nullable().default(null).describe("Several replicas acting as one router: each publishes its own in-flight load and provisional prefixes over NATS and merges the others'. null (default): a single router, nothing shared."),
  workers: z.array(WorkerSchema).default([]).describe("The static workers (discovery adds others)."),
  discovery: DiscoveryConfigSchema.prefault({}).describe("Workers that come and go: each source gives its full set; `workers` is the static one."),
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

/**
 * The engines' `--kv-events-config` JSON (vLLM's KVEventsConfig) and the
 * endpoint rules publishers and subscribers share.
 */
import { z } from 'zod';
import { CurveConfigSchema } from './curve.js';

import { ConfigError } from '../config/error.js';

export { ConfigError };

const count = (min: number) => z.number().int().min(min);

// Unknown keys (vLLM's enable_kv_cache_events, …) are stripped, not rejected.
export const KVEventsConfigSchema = z.object({
  publisher: z.enum(['zmq', 'null']).default('zmq').describe("`zmq` publishes over ZeroMQ; `null` publishes nothing."),
  endpoint: z.string().min(1).default('tcp://*:5557').describe("The PUB socket: `*`, `::`, ipc:// and inproc:// bind, any other host connects (vLLM's rule); data-parallel rank r uses port + r."),
  replay_endpoint: z.string().min(1).nullable().default(null).describe("The replay (ROUTER) socket subscribers ask for missed batches; always binds. null: no replay."),
  topic: z.string().default('').describe("Topic frame of every message (subscribers filter by prefix)."),
  buffer_steps: count(0).default(10000).describe("Batches kept for replay."),
  hwm: count(0).default(100000).describe("ZeroMQ send high-water mark of the PUB socket (messages)."),
  max_queue_size: count(1).default(100000).describe("Batches waiting to be sent; beyond that new ones are dropped (subscribers see the gap and replay)."),
  curve: CurveConfigSchema.optional().describe("Ours, not the engines': CURVE encryption and authentication of the PUB and replay sockets."),
});

export type KVEventsConfig = z.infer<typeof KVEventsConfigSchema>;

/** Parses a JSON string or an already-parsed object; throws ConfigError listing every bad field. */
export function parseKVEventsConfig(input: string | unknown): KVEventsConfig {
  let raw = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (err) {
      throw new ConfigError(`kv-events config is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (raw === undefined || raw === null) raw = {};
  const r = KVEventsConfigSchema.safeParse(raw);
  if (r.success) {
    for (const key of ['endpoint', 'replay_endpoint'] as const) {
      const ep = r.data[key];
      const why = ep === null ? null : endpointProblem(ep);
      if (why) throw new ConfigError(`invalid kv-events config:\n  - ${key}: ${why}`);
    }
    return r.data;
  }
  const lines = r.error.issues.map((i) => `  - ${i.path.length ? i.path.join('.') : '(config)'}: ${i.message}`);
  throw new ConfigError(`invalid kv-events config:\n${lines.join('\n')}`);
}

/** Why an endpoint string is unusable, or null when it is fine. */
export function endpointProblem(endpoint: string): string | null {
  const m = /^([a-z]+):\/\/(.+)$/.exec(endpoint);
  if (!m) return `expected transport://address (tcp://, ipc:// or inproc://), got ${JSON.stringify(endpoint)}`;
  const [, transport, rest] = m;
  if (transport === 'ipc' || transport === 'inproc') return null;
  if (transport !== 'tcp') return `unsupported transport ${JSON.stringify(transport)} in ${JSON.stringify(endpoint)}`;
  const colon = rest!.lastIndexOf(':');
  const port = colon < 0 ? '' : rest!.slice(colon + 1);
  if (colon <= 0 || !/^\d+$/.test(port) || Number(port) > 65535)
    return `tcp endpoint needs host:port with a port 0-65535, got ${JSON.stringify(endpoint)}`;
  return null;
}

export function assertEndpoint(endpoint: string): void {
  const why = endpointProblem(endpoint);
  if (why) throw new ConfigError(why);
}

/**
 * The endpoint of data-parallel rank `dpRank`, as vLLM's `offset_endpoint_port`:
 * tcp port + rank (port 0, "any free port", is never offset), inproc gets `_dp{r}`.
 * vLLM rejects ipc here; we give ipc the same `_dp{r}` suffix as inproc.
 */
export function offsetEndpoint(endpoint: string, dpRank: number): string {
  if (!Number.isInteger(dpRank) || dpRank < 0) throw new ConfigError(`dp rank must be a non-negative int, got ${dpRank}`);
  assertEndpoint(endpoint);
  if (dpRank === 0) return endpoint;
  if (endpoint.startsWith('inproc://') || endpoint.startsWith('ipc://')) return `${endpoint}_dp${dpRank}`;
  const colon = endpoint.lastIndexOf(':');
  const port = Number(endpoint.slice(colon + 1));
  if (port === 0) return endpoint;
  if (port + dpRank > 65535) throw new ConfigError(`port ${port} + dp rank ${dpRank} exceeds 65535 in ${endpoint}`);
  return `${endpoint.slice(0, colon)}:${port + dpRank}`;
}

/**
 * The engines' rule for the PUB socket (vLLM ZmqEventPublisher._socket_setup, "bind stable,
 * connect volatile"): `*`, `::`, ipc:// and inproc:// bind; anything else connects, including
 * tcp://0.0.0.0:… and a named host. The replay ROUTER socket always binds (see publisher.ts).
 */
export function isBindEndpoint(endpoint: string): boolean {
  return (
    endpoint.includes('*') ||
    endpoint.includes('::') ||
    endpoint.startsWith('ipc://') ||
    endpoint.startsWith('inproc://')
  );
}

/** Where a peer on this machine connects for an endpoint: wildcard tcp hosts become loopback. */
export function connectAddressFor(endpoint: string): string {
  const m = /^tcp:\/\/(?:\*|0\.0\.0\.0|\[::\]|::)(:\d+)$/.exec(endpoint);
  return m ? `tcp://127.0.0.1${m[1]}` : endpoint;
}

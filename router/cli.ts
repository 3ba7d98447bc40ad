import { parseArgs } from 'node:util';
import { resolveLogSettings, type LogSettings } from '../src/log/logger.js';
import { ConfigError, loadRouterConfigFile, parseRouterConfig, type RouterConfig, type RouterConfigInput } from './config.js';

export const USAGE = `kv-router: cache-aware router for LLM inference workers (OpenAI API)

usage: kv-router [--config FILE] [options]
       kv-router status [URL] [--key KEY]   the fleet table in the terminal (kv-router status --help)

  --config FILE            router config (JSON; see configs/router*.json)
  --host HOST              bind address (default 127.0.0.1)
  --port PORT              port (default 8000)
  --policy NAME            cache_aware | round_robin | random | least_load | approx_tree
                           | power_of_two | prefix_hash
  --admin-key KEY          bearer key for /workers (or env KV_ROUTER_ADMIN_KEY)
  --worker SPEC            add a worker (repeatable). SPEC is a URL, or key=value pairs:
                             url=http://h:8100,events=tcp://h:5557,replay=tcp://h:5558,topic=T,dp_ranks=N,id=ID,block_size=16
  --tokenizer-threads N    tokenization threads (default 2; 0 = main thread)
  --drain-timeout-ms MS    on SIGTERM/SIGINT, time in-flight requests get to finish (default 30000)
  --log-level LEVEL        error | warn | info | debug (default info, or env KV_ROUTER_LOG_LEVEL)
  --log-format FORMAT      text | json (JSON lines; default text, or env KV_ROUTER_LOG_FORMAT)
  --quiet                  no log lines
  -h, --help

Flags override the config file; --worker adds to its workers.`;

export interface Cli {
  config: RouterConfig;
  quiet: boolean;
  log: LogSettings;
}

export async function parseCli(argv: string[]): Promise<Cli | 'help'> {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        policy: { type: 'string' },
        'admin-key': { type: 'string' },
        worker: { type: 'string', multiple: true },
        'tokenizer-threads': { type: 'string' },
        'drain-timeout-ms': { type: 'string' },
        quiet: { type: 'boolean' },
        'log-level': { type: 'string' },
        'log-format': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} (see kv-router --help)`);
  }
  if (v.help) return 'help';
  let log: LogSettings;
  try {
    log = resolveLogSettings({ level: v['log-level'], format: v['log-format'], quiet: v.quiet });
  } catch (e) {
    throw new ConfigError(`${(e as Error).message} (see kv-router --help)`);
  }
  let base: Record<string, unknown> = {};
  if (v.config) {
    // Parse the file alone first so its errors name the file.
    const fromFile = await loadRouterConfigFile(v.config);
    base = JSON.parse(JSON.stringify(fromFile)) as Record<string, unknown>;
  }
  const input: Record<string, unknown> = { ...base };
  if (v.host !== undefined) input.host = v.host;
  if (v.port !== undefined) input.port = intFlag('--port', v.port);
  if (v.policy !== undefined) input.policy = v.policy;
  if (v['admin-key'] !== undefined) input.admin_key = v['admin-key'];
  if (v['tokenizer-threads'] !== undefined) input.tokenizer_threads = intFlag('--tokenizer-threads', v['tokenizer-threads']);
  if (v['drain-timeout-ms'] !== undefined) input.drain_timeout_ms = intFlag('--drain-timeout-ms', v['drain-timeout-ms']);
  if (v.worker?.length) input.workers = [...((base.workers as unknown[]) ?? []), ...v.worker.map(parseWorkerSpec)];
  return { config: parseRouterConfig(input as RouterConfigInput, 'flags/config'), quiet: v.quiet ?? false, log };
}

function intFlag(name: string, s: string): number {
  if (!/^\d+$/.test(s)) throw new ConfigError(`${name} must be a non-negative integer, got "${s}"`);
  return Number(s);
}

export function parseWorkerSpec(spec: string): Record<string, unknown> {
  if (!spec.includes('=')) return { url: spec };
  const kv: Record<string, string> = {};
  for (const part of spec.split(',')) {
    const i = part.indexOf('=');
    if (i <= 0) throw new ConfigError(`--worker: expected key=value, got "${part}" in "${spec}"`);
    kv[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  const known = new Set(['url', 'events', 'replay', 'topic', 'dp_ranks', 'id', 'block_size']);
  for (const k of Object.keys(kv)) if (!known.has(k)) throw new ConfigError(`--worker: unknown key "${k}" (known: ${[...known].join(', ')})`);
  const w: Record<string, unknown> = { url: kv.url };
  if (kv.id) w.id = kv.id;
  if (kv.dp_ranks) w.dp_ranks = intFlag('--worker dp_ranks', kv.dp_ranks);
  if (kv.block_size) w.block_size = intFlag('--worker block_size', kv.block_size);
  if (kv.events) w.kv_events = { endpoint: kv.events, replay_endpoint: kv.replay ?? null, topic: kv.topic ?? '' };
  else if (kv.replay || kv.topic) throw new ConfigError('--worker: replay/topic need events=ENDPOINT');
  return w;
}

/** What docs/CONFIG.md holds: the three config schemas, in the order a reader meets them. */
import { RouterConfigSchema } from '../../router/config.js';
import { WorkerConfigSchema } from '../../worker/config.js';
import { KVEventsConfigSchema } from '../events/config.js';
import { renderReference } from './reference.js';

const HEADER = `# Configuration reference

Generated from the zod schemas by \`npm run docs:config\` (router/config.ts, worker/config.ts,
src/events/config.ts): do not edit by hand; a test fails when this file and the schemas differ.
Every key is snake_case. \`a.b\` is key \`b\` inside object \`a\`; \`a[].b\` is key \`b\` of each item of
array \`a\`. "(its fields' defaults)": the object may be left out and its fields take their defaults.

Logging is set per process by flags or the environment, not in these files: \`--log-level
error|warn|info|debug\` (env \`KV_ROUTER_LOG_LEVEL\`), \`--log-format text|json\` (env
\`KV_ROUTER_LOG_FORMAT\`), \`--quiet\` (router: no lines); worker stages and child processes inherit them.
`;

export function configReference(): string {
  return renderReference(
    [
      {
        title: 'Router (`kv-router --config FILE`)',
        intro: 'A JSON file (see configs/router*.json). Flags override it: `--host`, `--port`, `--policy`, `--admin-key`, `--worker SPEC` (adds to `workers`), `--tokenizer-threads`, `--drain-timeout-ms` (see `kv-router --help`).',
        schema: RouterConfigSchema,
      },
      {
        title: 'Worker (`kv-worker --config FILE`)',
        intro: 'A JSON file (see configs/worker*.json). Every option is also a flag: the key in kebab-case (`num_blocks` is `--num-blocks`); flags win over the file.',
        schema: WorkerConfigSchema,
      },
      {
        title: 'KV events (`kv_events_config` of the worker, the engines\' `--kv-events-config`)',
        intro: "vLLM's KVEventsConfig keys, as a JSON string or object. vLLM's `enable_kv_cache_events` is accepted and ignored. The router's `workers[].kv_events` takes the same keys (it uses endpoint, replay_endpoint, topic and curve).",
        schema: KVEventsConfigSchema,
      },
    ],
    HEADER,
  );
}

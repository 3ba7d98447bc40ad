/** Prometheus metrics of the API process; cache and queue gauges are read from the scheduler at scrape time. */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FinishReason, LoadInfo, TextOutput } from '../messages.js';
import type { Kind } from './openai.js';

export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({ name: 'kv_worker_requests_total', help: 'Finished requests', labelNames: ['endpoint', 'finish_reason'], registers: [this.registry] });
  private readonly promptTokens = new Counter({ name: 'kv_worker_prompt_tokens_total', help: 'Prompt tokens of finished requests', registers: [this.registry] });
  private readonly cachedTokens = new Counter({ name: 'kv_worker_cached_prompt_tokens_total', help: 'Prompt tokens served from the prefix cache', registers: [this.registry] });
  private readonly generationTokens = new Counter({ name: 'kv_worker_generation_tokens_total', help: 'Generated tokens', registers: [this.registry] });
  private readonly ttft = new Histogram({ name: 'kv_worker_time_to_first_token_seconds', help: 'Time to first token', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] });
  private readonly e2e = new Histogram({ name: 'kv_worker_e2e_request_latency_seconds', help: 'Request latency', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], registers: [this.registry] });

  constructor(load: () => Promise<LoadInfo>) {
    let last: Promise<LoadInfo> | null = null;
    // One scheduler round trip per scrape, shared by all gauges.
    const read = async (pick: (l: LoadInfo) => number) => {
      last ??= load().finally(() => setTimeout(() => (last = null), 100));
      return pick(await last);
    };
    const gauge = (name: string, help: string, pick: (l: LoadInfo) => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          this.set(await read(pick));
        },
      });
    gauge('kv_worker_num_requests_running', 'Requests in the running batch', (l) => l.running);
    gauge('kv_worker_num_requests_waiting', 'Requests waiting for admission', (l) => l.waiting);
    gauge('kv_worker_cache_usage_ratio', 'Fraction of KV blocks referenced by running requests', (l) => l.cache_usage);
    gauge('kv_worker_free_blocks', 'KV blocks an allocation can get (empty or evictable)', (l) => l.free_blocks);
    gauge('kv_worker_cached_blocks', 'KV blocks registered in the prefix cache', (l) => l.cached_blocks);
  }

  start(kind: Kind) {
    const t0 = performance.now();
    let first = true;
    return {
      token: (o: TextOutput) => {
        if (!first || o.completionTokens === 0) return;
        first = false;
        this.ttft.observe((performance.now() - t0) / 1000);
      },
      done: (finish: FinishReason, o: TextOutput | null) => {
        this.requests.inc({ endpoint: kind, finish_reason: finish });
        this.e2e.observe((performance.now() - t0) / 1000);
        if (!o) return;
        this.promptTokens.inc(o.promptTokens);
        this.cachedTokens.inc(o.cachedTokens);
        this.generationTokens.inc(o.completionTokens);
      },
    };
  }
}

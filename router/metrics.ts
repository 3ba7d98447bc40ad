import { Counter, Gauge, Histogram, Registry as PromRegistry } from 'prom-client';
import type { Registry } from './registry.js';
import { sourceId } from './registry.js';
import type { LoadView } from './load.js';
import type { IndexLike } from './registry.js';
import type { ClusterLink } from './cluster/link.js';

/** The router's Prometheus metrics (own registry, so several routers can live in one process). */
export class RouterMetrics {
  readonly registry = new PromRegistry();
  readonly requests: Counter<'worker' | 'outcome' | 'endpoint'>;
  readonly decisionSeconds: Histogram<'policy'>;
  readonly tokenizeSeconds: Histogram;
  readonly predictedCachedTokens: Counter<'worker'>;
  readonly actualCachedTokens: Counter<'worker'>;
  readonly predictionErrorTokens: Histogram<'worker'>;
  readonly addedLatencySeconds: Histogram;
  readonly ttfbSeconds: Histogram<'worker'>;
  readonly upstreamSeconds: Histogram<'worker'>;
  readonly upstreamErrors: Counter<'worker' | 'status'>;
  readonly promptTokens: Counter<'worker'>;
  /** Prompt tokens of routed requests, and what one unlimited cache of every earlier prompt held of them (observe/hit-bound.ts). */
  readonly routedPromptTokens: Counter;
  readonly boundCachedTokens: Counter;
  readonly retries: Counter<'worker' | 'reason'>;
  /** Per stream counter: each (worker, rank)'s cumulative value at the last scrape. */
  private readonly streamSeen: Map<string, number>[] = [];

  /**
   * accuracy: the worker's prediction accuracy over its sliding window (see observe/accuracy.ts),
   * null while unknown; the gauge shows the workers that have one.
   */
  constructor(workers: Registry, load: LoadView, index: IndexLike, cluster: ClusterLink | null = null, accuracy: ((worker: string) => number | null) | null = null) {
    const r = this.registry;
    this.requests = new Counter({
      name: 'kv_router_requests_total',
      help: 'Proxied requests by worker and outcome (ok, upstream_status, retry, stream_error, aborted, no_worker, bad_request)',
      labelNames: ['worker', 'outcome', 'endpoint'],
      registers: [r],
    });
    this.decisionSeconds = new Histogram({
      name: 'kv_router_decision_seconds',
      help: 'Time to rank the candidates (index walk + cost), tokenization excluded',
      labelNames: ['policy'],
      buckets: [1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2.5e-2],
      registers: [r],
    });
    this.tokenizeSeconds = new Histogram({
      name: 'kv_router_tokenize_seconds',
      help: 'Time to tokenize a prompt (worker thread round trip)',
      buckets: [1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1],
      registers: [r],
    });
    this.predictedCachedTokens = new Counter({
      name: 'kv_router_predicted_cached_tokens_total',
      help: 'Prompt tokens the router predicted the chosen worker holds (requests answered 2xx)',
      labelNames: ['worker'],
      registers: [r],
    });
    this.actualCachedTokens = new Counter({
      name: 'kv_router_actual_cached_tokens_total',
      help: 'Prompt tokens the worker reported cached (usage.prompt_tokens_details.cached_tokens)',
      labelNames: ['worker'],
      registers: [r],
    });
    this.predictionErrorTokens = new Histogram({
      name: 'kv_router_prediction_error_tokens',
      help: 'Predicted minus actual cached tokens per request (positive: the router expected hits the worker did not have)',
      labelNames: ['worker'],
      buckets: [-4096, -1024, -256, -64, -16, -1, 0, 16, 64, 256, 1024, 4096],
      registers: [r],
    });
    const latency = [1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    this.addedLatencySeconds = new Histogram({
      name: 'kv_router_added_latency_seconds',
      help: 'What the router adds before the first byte: time from the request reaching the pipeline to the first upstream byte, minus that attempt\'s upstream TTFB (tokenize, rank, failed attempts and backoff included)',
      buckets: latency,
      registers: [r],
    });
    this.ttfbSeconds = new Histogram({
      name: 'kv_router_ttfb_seconds',
      help: 'Time from sending to the worker to its first response body byte',
      labelNames: ['worker'],
      buckets: [...latency, 30, 60],
      registers: [r],
    });
    this.upstreamSeconds = new Histogram({
      name: 'kv_router_upstream_seconds',
      help: 'The whole upstream exchange of the attempt that answered: send to the last body byte',
      labelNames: ['worker'],
      buckets: [...latency, 30, 60, 120, 300],
      registers: [r],
    });
    this.upstreamErrors = new Counter({
      name: 'kv_router_upstream_errors_total',
      help: 'Upstream attempts that failed: status is the HTTP status code, or refused/connect/timeout/body/out_of_rotation/stream_error when there was none',
      labelNames: ['worker', 'status'],
      registers: [r],
    });
    if (accuracy) {
      new Gauge({
        name: 'kv_router_prediction_accuracy',
        help: 'Share of predicted cached tokens the worker reported cached over its sliding window (sum of min(actual, predicted) / sum of predicted, last 200 answered requests within 5 min)',
        labelNames: ['worker'],
        registers: [r],
        collect() {
          this.reset();
          for (const w of workers.list()) {
            const a = accuracy(w.id);
            if (a !== null) this.set({ worker: w.id }, a);
          }
        },
      });
    }
    this.promptTokens = new Counter({
      name: 'kv_router_prompt_tokens_total',
      help: 'Prompt tokens routed to each worker',
      labelNames: ['worker'],
      registers: [r],
    });
    this.routedPromptTokens = new Counter({
      name: 'kv_router_routed_prompt_tokens_total',
      help: 'Prompt tokens of routed requests (first attempt), the denominator of the hit-rate upper bound',
      registers: [r],
    });
    this.boundCachedTokens = new Counter({
      name: 'kv_router_bound_cached_tokens_total',
      help: 'Tokens of routed prompts one unlimited prefix cache of every earlier routed prompt would have held: the hit-rate upper bound since start',
      registers: [r],
    });
    this.retries = new Counter({
      name: 'kv_router_retries_total',
      help: 'Attempts that failed before the first byte and moved to the next worker',
      labelNames: ['worker', 'reason'],
      registers: [r],
    });

    const perSource = (
      name: string,
      help: string,
      value: (w: ReturnType<Registry['list']>[number], rank: number, source: string) => number | null,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ['worker', 'rank'],
        registers: [r],
        collect() {
          this.reset();
          for (const w of workers.list()) {
            for (const rank of w.ranks) {
              const v = value(w, rank, sourceId(w.id, rank));
              if (v !== null && Number.isFinite(v)) this.set({ worker: w.id, rank: String(rank) }, v);
            }
          }
        },
      });

    new Gauge({
      name: 'kv_router_worker_healthy',
      help: '1 when the worker is in rotation',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        this.reset();
        for (const w of workers.list()) this.set({ worker: w.id }, w.state === 'healthy' ? 1 : 0);
      },
    });
    if (cluster) {
      new Gauge({
        name: 'kv_router_cluster_connected',
        help: '1 while the NATS link of the shared load is up (0: routing on this replica\'s own view)',
        registers: [r],
        collect() {
          this.set(cluster.status().state === 'connected' ? 1 : 0);
        },
      });
      new Gauge({
        name: 'kv_router_cluster_peers',
        help: 'Other replicas whose load share is live',
        registers: [r],
        collect() {
          this.set(cluster.status().peers.length);
        },
      });
      for (const [key, help] of [
        ['published_messages', 'NATS messages published'],
        ['published_bytes', 'NATS bytes published (payload + subject)'],
        ['received_messages', 'NATS messages received'],
        ['received_bytes', 'NATS payload bytes received'],
        ['malformed', 'NATS messages dropped as malformed'],
      ] as const) {
        let seen: number | undefined;
        new Counter({
          name: `kv_router_cluster_${key}_total`,
          help,
          registers: [r],
          collect() {
            this.inc(counterIncrease(seen, cluster.counters[key]));
            seen = cluster.counters[key];
          },
        });
      }
    }
    perSource('kv_router_in_flight', 'Requests this router (in cluster mode: every live replica) has in flight on the worker', (_w, _r, s) => load.get(s).inFlight);
    perSource('kv_router_pending_prefill_tokens', 'Uncached prompt tokens sent and not yet past their first byte', (_w, _r, s) => load.get(s).pendingPrefillTokens);
    perSource('kv_router_active_decodes', 'Requests past their first byte, not finished', (_w, _r, s) => load.get(s).activeDecodes);
    const stream = (w: ReturnType<Registry['list']>[number], rank: number) => workers.streamHealth(w, rank);
    perSource('kv_router_stream_trusted', '1 when the event stream is trusted (cache scores count)', (w, rank) => {
      const h = stream(w, rank);
      return h ? (h.trusted ? 1 : 0) : null;
    });
    perSource('kv_router_stream_last_seq', 'Last applied event batch sequence number', (w, rank) => {
      const s = stream(w, rank)?.lastSeq;
      return s === null || s === undefined ? null : Number(s);
    });
    // Stream counts are cumulative per feed: exposed as counters fed with their increase at each scrape.
    for (const [key, what] of [
      ['batches', 'Event batches applied'],
      ['gaps', 'Sequence gaps seen'],
      ['replays', 'Replays requested'],
      ['resets', 'Stream resets (publisher restarted)'],
      ['historyMissing', 'Times history was confirmed missing (tree cleared)'],
      ['malformed', 'Malformed frames skipped'],
      ['silentWarnings', 'Warnings that requests were routed to a worker whose stream delivered nothing'],
      ['snapshots', 'Times the tree was rebuilt from a publisher snapshot (history gone, trust kept)'],
      ['snapshotFallbacks', 'Snapshot requests the publisher could not serve (the tree was cleared instead)'],
      ['trustLosses', 'Times the stream stopped being trusted'],
    ] as const) {
      const name = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      const seen = new Map<string, number>();
      this.streamSeen.push(seen);
      new Counter({
        name: `kv_router_stream_${name}_total`,
        help: what,
        labelNames: ['worker', 'rank'],
        registers: [r],
        collect() {
          for (const w of workers.list()) {
            for (const rank of w.ranks) {
              const h = stream(w, rank);
              if (!h) continue;
              const s = `${w.id}\u0000${rank}`;
              this.inc({ worker: w.id, rank: String(rank) }, counterIncrease(seen.get(s), h[key]));
              seen.set(s, h[key]);
            }
          }
        },
      });
    }
    perSource('kv_router_stream_silent', '1 while requests are routed to the worker and its stream delivers nothing (see /workers: silent)', (w, rank) => {
      const h = stream(w, rank);
      return h ? (h.silent ? 1 : 0) : null;
    });
    perSource('kv_router_tree_blocks', 'Blocks the index holds for the stream', (_w, _r, s) => index.stats(s).blocks);
    perSource('kv_router_tree_nodes', 'Distinct token-keyed nodes the index holds for the stream', (_w, _r, s) => index.stats(s).nodes);
    perSource('kv_router_tree_provisional_blocks', 'Provisional (predicted) blocks for the stream', (_w, _r, s) => index.stats(s).provisionalBlocks);
  }

  /** A worker left: its series go (removed workers' labels would otherwise stay forever). */
  async forgetWorker(id: string): Promise<void> {
    for (const seen of this.streamSeen) for (const s of [...seen.keys()]) if (s.startsWith(`${id}\u0000`)) seen.delete(s);
    for (const m of this.registry.getMetricsAsArray()) {
      const labelled = m as unknown as { labelNames?: string[]; get(): Promise<{ values: { labels: Record<string, string | number> }[] }>; remove(labels: Record<string, string | number>): void };
      if (!labelled.labelNames?.includes('worker')) continue;
      const { values } = await labelled.get();
      // A histogram's values carry its buckets' `le`: the series is removed by its own labels, once.
      const own = new Map<string, Record<string, string | number>>();
      for (const v of values) {
        if (v.labels.worker !== id) continue;
        const labels = Object.fromEntries(Object.entries(v.labels).filter(([k]) => labelled.labelNames!.includes(k)));
        own.set(JSON.stringify(labels), labels);
      }
      for (const labels of own.values()) labelled.remove(labels);
    }
  }
}

/** How much a cumulative count grew since the last look; a count that went down restarted from 0. */
export function counterIncrease(previous: number | undefined, current: number): number {
  if (previous === undefined || current < previous) return current;
  return current - previous;
}

import { KVEventSubscriber } from '../src/events/subscriber.js';
import { offsetEndpoint } from '../src/events/config.js';
import type { CurveClientOptions } from '../src/events/curve.js';
import type { KVEventBatch } from '../src/events/types.js';

/** What /workers and /metrics show of one (worker, rank) event stream. */
export interface StreamHealth {
  trusted: boolean;
  connected: boolean;
  lastSeq: string | null;
  batches: number;
  gaps: number;
  replays: number;
  resets: number;
  historyMissing: number;
  malformed: number;
  duplicates: number;
  /** Sync probes of the replay endpoint (reconnect, idle), and those that found batches the live stream lost. */
  probes: number;
  probeFinds: number;
  lagMs: number | null;
  treeClears: number;
}

export interface StreamSink {
  applyBatch(source: string, batch: KVEventBatch): void;
  clearSource(source: string): void;
}

/**
 * One subscriber per (worker, rank) feeding the index: batches applied in order;
 * a reset (worker restarted) or confirmed missing history clears that source's tree.
 */
export class StreamFeed {
  private sub: KVEventSubscriber | null = null;
  private clears = 0;
  /** Block size last seen in this stream's BlockStored events. */
  blockSize: number | null = null;

  constructor(
    readonly source: string,
    readonly endpoint: string,
    readonly replayEndpoint: string | null,
    readonly topic: string,
    private readonly sink: StreamSink,
    private readonly log: (msg: string) => void = () => {},
    private readonly curve: CurveClientOptions | null = null,
  ) {}

  async start(): Promise<void> {
    this.sub = new KVEventSubscriber({
      endpoint: this.endpoint,
      replayEndpoint: this.replayEndpoint,
      topic: this.topic,
      curve: this.curve,
      onItem: (item) => {
        if (item.kind === 'batch') {
          for (const ev of item.batch.events) if (ev.type === 'BlockStored') this.blockSize = ev.block_size;
          this.sink.applyBatch(this.source, item.batch);
          return;
        }
        const kind = item.notice.notice;
        if (kind === 'reset' || kind === 'history_missing') {
          this.clears++;
          this.sink.clearSource(this.source);
          this.log(`stream ${this.source}: ${kind}, tree cleared`);
        }
      },
    });
    await this.sub.start();
  }

  health(): StreamHealth {
    const h = this.sub?.health();
    return {
      trusted: h?.trusted ?? false,
      connected: h?.connected ?? false,
      lastSeq: h?.lastSeq == null ? null : h.lastSeq.toString(),
      batches: h?.batches ?? 0,
      gaps: h?.gaps ?? 0,
      replays: h?.replays ?? 0,
      resets: h?.resets ?? 0,
      historyMissing: h?.historyMissing ?? 0,
      malformed: h?.malformedFrames ?? 0,
      duplicates: h?.duplicates ?? 0,
      probes: h?.probes ?? 0,
      probeFinds: h?.probeFinds ?? 0,
      lagMs: h?.lagMs ?? null,
      treeClears: this.clears,
    };
  }

  async close(): Promise<void> {
    const s = this.sub;
    this.sub = null;
    if (s) await s.close();
  }
}

/**
 * Where the router connects for rank `rank` of a worker's stream: bind-form hosts
 * (*, 0.0.0.0, ::) become the worker url's host, then the engines' per-rank port offset.
 */
export function streamEndpoint(endpoint: string, workerUrl: string, rank: number): string {
  const host = new URL(workerUrl).hostname;
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const ep = endpoint.replace(/^tcp:\/\/(?:\*|0\.0\.0\.0|\[::\]|::)(?=:\d+$)/, `tcp://${h}`);
  return offsetEndpoint(ep, rank);
}

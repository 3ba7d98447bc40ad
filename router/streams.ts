import * as zmq from 'zeromq';
import { KVEventSubscriber } from '../src/events/subscriber.js';
import { offsetEndpoint } from '../src/events/config.js';
import { SharedSubscriber } from '../src/events/shared-sub.js';
import type { CurveClientOptions } from '../src/events/curve.js';
import type { ArrayLayout } from '../src/events/codec.js';
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
  /** Trees rebuilt from a worker's snapshot (history gone, trust kept); requests for one that ended in a clear. */
  snapshots: number;
  snapshotFallbacks: number;
  /** Times the stream went from trusted to untrusted. */
  trustLosses: number;
  /** Requests routed to this source since its last batch (all of them when it never sent one). */
  routedWithoutEvents: number;
  /** Times the stream was found silent while requests were routed to it (a counter for /metrics). */
  silentWarnings: number;
  /** Set while requests are routed to this source and its stream says nothing: what is likely wrong. */
  silent: string | null;
}

/** When a stream counts as silent: this many requests routed to it, the first this long ago, and no batch since. */
export interface SilenceOptions {
  requests: number;
  afterMs: number;
}

const DEFAULT_SILENCE: SilenceOptions = { requests: 5, afterMs: 10_000 };

/**
 * libzmq's context allows 1023 sockets by default, and every (worker, rank) stream holds three (its
 * SUB and the monitor pair behind its connection events), so a router could not subscribe to more
 * than ~340 sources ("Too many open file descriptors" at 170 workers × 2 ranks). Raised to libzmq's
 * own limit before the first socket exists (libzmq reads it when the context starts); the process's
 * fd limit (ulimit -n) still applies.
 */
function raiseSocketLimit(): void {
  try {
    if (zmq.context.maxSockets < zmq.context.maxSocketsLimit) zmq.context.maxSockets = zmq.context.maxSocketsLimit;
  } catch {
    /* a context already started keeps its limit */
  }
}
raiseSocketLimit();

export interface StreamFeedOptions {
  silence?: SilenceOptions;
  /** The clock (ms), for tests. */
  now?: () => number;
  /** Connect mode: the live stream comes from the router's bound SUB for this rank, by topic. */
  shared?: SharedSubscriber | null;
  /** Ask for a snapshot when history is gone (only our worker answers). Default true. */
  snapshots?: boolean;
  /** How legacy array events are read: `sglang` for SGLang's layout after `medium`. Default auto. */
  arrayLayout?: ArrayLayout;
}

/**
 * Connect mode (config `events_bind`): the router binds one SUB per data-parallel rank (rank r
 * at the events_bind port + r, where the engines' rank r connects) and every worker's publisher
 * connects to it with its own topic. One instance per router; forRank() binds on first use.
 */
export class SharedStreams {
  private readonly socks = new Map<number, Promise<SharedSubscriber>>();
  constructor(readonly bind: string) {}

  forRank(rank: number): Promise<SharedSubscriber> {
    let s = this.socks.get(rank);
    if (!s) {
      s = SharedSubscriber.bind(offsetEndpoint(this.bind, rank));
      s.catch(() => this.socks.delete(rank));
      this.socks.set(rank, s);
    }
    return s;
  }

  async close(): Promise<void> {
    const all = [...this.socks.values()];
    this.socks.clear();
    for (const s of await Promise.allSettled(all)) if (s.status === 'fulfilled') s.value.close();
  }
}

/**
 * Why a stream that requests are routed to has said nothing, or null when it is not (yet) silent.
 * Pure: the router's counts and the stream's health in, a warning out.
 */
export function silenceVerdict(
  s: { routed: number; firstRoutedAt: number | null; connected: boolean; batches: number },
  where: { endpoint: string; topic: string },
  now: number,
  o: SilenceOptions = DEFAULT_SILENCE,
): string | null {
  if (s.firstRoutedAt === null || s.routed < o.requests || now - s.firstRoutedAt < o.afterMs) return null;
  const n = `${s.routed} requests routed in ${Math.round((now - s.firstRoutedAt) / 1000)} s`;
  if (!s.connected)
    return (
      `${n}, but the event stream ${where.endpoint} has never connected: wrong host or port, or a bind/connect mismatch ` +
      `(the engine's PUB binds only for tcp://*:port, [::], ipc:// or inproc://; tcp://0.0.0.0 or a host name makes it connect)`
    );
  return (
    `${n}, but no KV event ${s.batches === 0 ? 'ever arrived' : 'arrived since'} on ${where.endpoint}: vLLM publishes nothing without ` +
    `"enable_kv_cache_events": true in --kv-events-config; or the topic differs (router subscribes to ${JSON.stringify(where.topic)})`
  );
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
  private routed = 0;
  private firstRoutedAt: number | null = null;
  private silentNow: string | null = null;
  private silentWarnings = 0;
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
    opts: StreamFeedOptions = {},
  ) {
    this.silence = opts.silence ?? DEFAULT_SILENCE;
    this.now = opts.now ?? Date.now;
    this.shared = opts.shared ?? null;
    this.snapshots = opts.snapshots ?? true;
    this.arrayLayout = opts.arrayLayout ?? 'auto';
  }

  private readonly snapshots: boolean;
  private readonly arrayLayout: ArrayLayout;

  private readonly silence: SilenceOptions;
  private readonly now: () => number;
  private readonly shared: SharedSubscriber | null;

  /**
   * The router routed a request to this source. A stream that stays silent meanwhile (never
   * connected, or no batch) gets a warning: logged once, shown in health().silent, counted.
   */
  noteRouted(): void {
    const now = this.now();
    this.routed++;
    this.firstRoutedAt ??= now;
    const h = this.sub?.health();
    const verdict = silenceVerdict(
      { routed: this.routed, firstRoutedAt: this.firstRoutedAt, connected: h?.connected ?? false, batches: h?.batches ?? 0 },
      { endpoint: this.endpoint, topic: this.topic },
      now,
      this.silence,
    );
    if (verdict !== null && this.silentNow === null) {
      this.silentWarnings++;
      this.log(`stream ${this.source}: silent: ${verdict}`);
    }
    this.silentNow = verdict;
  }

  async start(): Promise<void> {
    this.sub = new KVEventSubscriber({
      endpoint: this.endpoint,
      replayEndpoint: this.replayEndpoint,
      topic: this.topic,
      curve: this.curve,
      shared: this.shared,
      snapshots: this.snapshots,
      arrayLayout: this.arrayLayout,
      onItem: (item) => {
        if (item.kind === 'batch') {
          this.routed = 0;
          this.firstRoutedAt = null;
          this.silentNow = null;
          for (const ev of item.batch.events) if (ev.type === 'BlockStored') this.blockSize = ev.block_size;
          this.sink.applyBatch(this.source, item.batch);
          return;
        }
        if (item.kind === 'snapshot') {
          // One synchronous step: no request is routed against a half-built tree.
          this.sink.clearSource(this.source);
          let blocks = 0;
          for (const b of item.batches) {
            for (const ev of b.events) if (ev.type === 'BlockStored') (this.blockSize = ev.block_size), (blocks += ev.block_hashes.length);
            this.sink.applyBatch(this.source, b);
          }
          this.log(`stream ${this.source}: history gone, tree rebuilt from the worker's snapshot (${blocks} blocks, valid at seq ${item.atSeq})`);
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

  /**
   * health().trusted without the rest: the registry asks for every candidate of every decision (at
   * 512 sources, building the whole health record per candidate cost more than ranking them).
   */
  get trusted(): boolean {
    return this.sub?.health().trusted ?? false;
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
      snapshots: h?.snapshots ?? 0,
      snapshotFallbacks: h?.snapshotFallbacks ?? 0,
      trustLosses: h?.trustLosses ?? 0,
      routedWithoutEvents: this.routed,
      silentWarnings: this.silentWarnings,
      silent: this.silentNow,
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

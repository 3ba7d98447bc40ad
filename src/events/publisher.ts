/**
 * The KV-event publisher: the same contract as vLLM's and SGLang's ZmqEventPublisher.
 *
 * PUB frames `[topic, seq(8 B BE), payload]` with seq from 0, and an optional
 * ROUTER replay endpoint that answers `["", start_seq]` with every buffered
 * batch from start_seq, then the end marker.
 */
import * as zmq from 'zeromq';
import { encodeBatch, type EventEncoding } from './codec.js';
import { applyCurveServer, curveServerFromConfig, releaseCurveServer, type CurveServerOptions } from './curve.js';
import { ConfigError, offsetEndpoint, type KVEventsConfig } from './config.js';
import { attach, removeIpcFile, yieldToLoop } from './endpoint.js';
import { decodeSeq, encodeSeq, END_OF_REPLAY_SEQ } from './frames.js';
import { RingBuffer, type Buffered } from './ring-buffer.js';
import { isSnapshotRequest, SNAPSHOT_TAG } from './snapshot.js';
import type { KVEvent } from './types.js';
import { loggerFromEnv } from '../log/logger.js';

/**
 * What a snapshot request gets (snapshot.ts): the whole cache as BlockStored events (parents
 * first), read at one instant together with `atSeq`, the publisher's nextSeq at that instant,
 * when no cache change is left unpublished.
 */
export interface CacheSnapshot {
  atSeq: bigint;
  events: KVEvent[];
}
export type SnapshotSource = () => Promise<CacheSnapshot>;

/** A batch that could not be queued. Its seq is consumed, so every subscriber sees the gap. */
export class QueueFullError extends Error {
  override readonly name = 'QueueFullError';
  constructor(
    message: string,
    readonly seq: bigint,
  ) {
    super(message);
  }
}

export class PublisherClosedError extends Error {
  override readonly name = 'PublisherClosedError';
}

export interface PublisherOptions {
  config: KVEventsConfig;
  /** Offsets the endpoints (see offsetEndpoint) and is written into every batch. */
  dpRank?: number | null;
  /** Replay reply shape: `current` = ["", topic, seq, payload] (vLLM), `legacy` = ["", seq, payload]. */
  replayShape?: 'current' | 'legacy';
  encoding?: EventEncoding;
  /** CURVE on the PUB and replay sockets: our key pair, optionally an allow-list of client keys. Default: config.curve. */
  curve?: CurveServerOptions | null;
  /** Replay requests waiting to be served beyond this are dropped (counted, unanswered). Default 64. */
  maxPendingReplays?: number;
  /** Answers snapshot requests (see setSnapshotSource). */
  snapshot?: SnapshotSource | null;
}

export interface PublisherStats {
  published: bigint;
  nextSeq: bigint;
  /** Batches refused by a full queue (their seqs are holes subscribers see). */
  dropped: number;
  queued: number;
  buffered: number;
  replayRequests: number;
  malformedReplayRequests: number;
  /** Well-formed requests refused because too many were already waiting. */
  droppedReplayRequests: number;
  /** Requests queued or being served now. */
  pendingReplays: number;
  /** Snapshot requests received, and those answered with a snapshot. */
  snapshotRequests: number;
  snapshotsSent: number;
}

const EMPTY = Buffer.alloc(0);
const END_SEQ = encodeSeq(END_OF_REPLAY_SEQ);
/** Replay frames sent per turn of the event loop, so a replay never stalls publishing. */
const REPLAY_CHUNK = 64;
/** Blocks per snapshot chunk (one batch payload each). */
const SNAPSHOT_CHUNK_BLOCKS = 512;
const PUMP_CHUNK = 256;
/** A replay client that stops reading is abandoned after this long. */
const REPLAY_SEND_TIMEOUT_MS = 5000;
/**
 * A queued replay not started after this long is dropped unserved: its client has given up
 * (clients time out well before), and serving it would only delay the replays still wanted.
 */
const REPLAY_MAX_QUEUED_MS = 10_000;

class Fifo<T> {
  private items: T[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(x: T): void {
    this.items.push(x);
  }
  peek(): T | undefined {
    return this.items[this.head];
  }
  shift(): void {
    this.head++;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

export class KVEventPublisher {
  private readonly topic: Buffer;
  private readonly dpRank: number | null;
  private readonly encoding: EventEncoding;
  private readonly shape: 'current' | 'legacy';
  private readonly maxQueue: number;
  private readonly queue = new Fifo<Buffered>();
  private readonly ring: RingBuffer;
  private seq = 0n;
  private published = 0n;
  private dropped = 0;
  private replayRequests = 0;
  private malformedReplayRequests = 0;
  private droppedReplayRequests = 0;
  private pendingReplays = 0;
  private snapshotRequests = 0;
  private snapshotsSent = 0;
  private snapshotSource: SnapshotSource | null;
  private readonly maxPendingReplays: number;
  private pumping: Promise<void> | null = null;
  private replayChain: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    opts: PublisherOptions,
    private readonly pub: zmq.Publisher | null,
    private readonly router: zmq.Router | null,
    /** Actual bound or connected addresses ('' for a disabled publisher). */
    readonly endpoint: string,
    readonly replayEndpoint: string | null,
  ) {
    this.topic = Buffer.from(opts.config.topic, 'utf8');
    this.dpRank = opts.dpRank ?? null;
    this.encoding = opts.encoding ?? 'map';
    this.shape = opts.replayShape ?? 'current';
    this.maxQueue = opts.config.max_queue_size;
    this.ring = new RingBuffer(opts.config.buffer_steps);
    this.maxPendingReplays = opts.maxPendingReplays ?? 64;
    this.snapshotSource = opts.snapshot ?? null;
    if (router) void this.serveReplays(router);
  }

  /**
   * Binds or connects (engines' rule) and resolves when ready. With `publisher: "null"`
   * the publisher is disabled: publish() still numbers batches but nothing is sent.
   */
  static async create(opts: PublisherOptions): Promise<KVEventPublisher> {
    const cfg = opts.config;
    const rank = opts.dpRank ?? null;
    if (cfg.publisher === 'null') return new KVEventPublisher(opts, null, null, '', null);
    const endpoint = rank === null ? cfg.endpoint : offsetEndpoint(cfg.endpoint, rank);
    const replay = cfg.replay_endpoint === null ? null : rank === null ? cfg.replay_endpoint : offsetEndpoint(cfg.replay_endpoint, rank);
    if (replay !== null && replay === endpoint && !endpoint.endsWith(':0')) throw new ConfigError(`replay_endpoint must differ from endpoint (${endpoint})`);

    const curve = opts.curve !== undefined ? opts.curve : cfg.curve ? curveServerFromConfig(cfg.curve) : null;
    const pub = new zmq.Publisher({ sendHighWaterMark: cfg.hwm, linger: 0 });
    let router: zmq.Router | null = null;
    try {
      if (curve) await applyCurveServer(pub, curve);
      const actual = await attach(pub, endpoint);
      let actualReplay: string | null = null;
      if (replay !== null) {
        router = new zmq.Router({
          mandatory: true, // wait at the HWM instead of silently dropping replay frames
          sendHighWaterMark: cfg.hwm,
          sendTimeout: REPLAY_SEND_TIMEOUT_MS,
          linger: 0,
        });
        if (curve) await applyCurveServer(router, curve);
        // The replay socket always binds, whatever its address (as vLLM and SGLang do).
        actualReplay = await attach(router, replay, true);
      }
      return new KVEventPublisher(opts, pub, router, actual, actualReplay);
    } catch (err) {
      releaseCurveServer(pub);
      if (router) releaseCurveServer(router);
      pub.close();
      router?.close();
      throw err;
    }
  }

  /**
   * Assigns the next seq (from 0), fills dp_rank, queues the batch; returns its seq.
   * A full queue throws QueueFullError after consuming the seq: the batch is lost, but never
   * silently, since subscribers see the hole and replay it or report history_missing.
   */
  publish(events: KVEvent[], ts: number = Date.now() / 1000): bigint {
    if (this.closed) throw new PublisherClosedError('publisher is closed');
    if (this.queue.length >= this.maxQueue) {
      const lost = this.seq++;
      this.dropped++;
      throw new QueueFullError(`KV event queue is full (${this.maxQueue} batches waiting); batch #${lost} dropped`, lost);
    }
    const payload = encodeBatch({ ts, events, dp_rank: this.dpRank }, { encoding: this.encoding });
    const seq = this.seq++;
    if (!this.pub) {
      this.published++;
      return seq;
    }
    this.queue.push({ seq, payload });
    this.pumping ??= this.pump();
    return seq;
  }

  /** The seq the next published batch gets. */
  get nextSeq(): bigint {
    return this.seq;
  }

  /** Serve snapshot requests from `source` (null: answer them "unsupported", as vLLM and SGLang do). */
  setSnapshotSource(source: SnapshotSource | null): void {
    this.snapshotSource = source;
  }

  /** Resolves when everything published so far has been handed to ZeroMQ. */
  async flush(): Promise<void> {
    while (this.pumping) await this.pumping;
  }

  stats(): PublisherStats {
    return {
      published: this.published,
      nextSeq: this.seq,
      dropped: this.dropped,
      queued: this.queue.length,
      buffered: this.ring.size,
      replayRequests: this.replayRequests,
      malformedReplayRequests: this.malformedReplayRequests,
      droppedReplayRequests: this.droppedReplayRequests,
      pendingReplays: this.pendingReplays,
      snapshotRequests: this.snapshotRequests,
      snapshotsSent: this.snapshotsSent,
    };
  }

  /** Flushes the queue (waiting at most timeoutMs), closes the sockets, removes ipc files it bound. */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const deadline = Date.now() + timeoutMs;
    await Promise.race([this.flush(), sleep(timeoutMs)]);
    if (this.pub) {
      releaseCurveServer(this.pub);
      // Let ZeroMQ deliver what it already holds for connected subscribers, within the budget.
      this.pub.linger = Math.max(0, deadline - Date.now());
      this.pub.close();
      removeIpcFile(this.endpoint);
    }
    if (this.router) {
      releaseCurveServer(this.router);
      // No unbind first: unbinding a ROUTER whose peers are still connected can trip libzmq's own
      // assertion (socket_base.cpp "erased") and abort the process. close() frees the port a little
      // later, on ZeroMQ's I/O thread; a restarted publisher's bind waits for it (attach, BIND_RETRY_MS).
      this.router.close();
      if (this.replayEndpoint) removeIpcFile(this.replayEndpoint);
    }
  }

  private async pump(): Promise<void> {
    const pub = this.pub!;
    try {
      let n = 0;
      for (let item = this.queue.peek(); item; item = this.queue.peek()) {
        if (pub.closed) return;
        await pub.send([this.topic, encodeSeq(item.seq), item.payload]);
        this.queue.shift();
        this.ring.push(item.seq, item.payload);
        this.published++;
        if (++n % PUMP_CHUNK === 0) await yieldToLoop();
      }
    } catch (err) {
      if (!pub.closed) loggerFromEnv('kv-events publisher').error(`send failed: ${(err as Error).message}`);
    } finally {
      this.pumping = null;
    }
  }

  private async serveReplays(router: zmq.Router): Promise<void> {
    while (!router.closed) {
      let msg: Buffer[];
      try {
        msg = await router.receive();
      } catch {
        if (router.closed) return;
        continue;
      }
      if (isSnapshotRequest(msg)) {
        this.snapshotRequests++;
        this.queueServe(() => this.sendSnapshot(router, msg[0]!));
        continue;
      }
      const start = parseReplayRequest(msg);
      if (start === null) {
        this.malformedReplayRequests++;
        continue;
      }
      this.replayRequests++;
      // A copy now (what the buffer holds when asked); bounded by maxPendingReplays.
      const entries = this.ring.from(start);
      this.queueServe(() => this.sendReplay(router, msg[0]!, entries));
    }
  }

  /** Serves requests one at a time, in order; a burst beyond maxPendingReplays is dropped unanswered. */
  private queueServe(serve: () => Promise<void>): void {
    if (this.pendingReplays >= this.maxPendingReplays) {
      // Serving them all would hold a copy each; the client times out and says so.
      this.droppedReplayRequests++;
      return;
    }
    this.pendingReplays++;
    const queuedAt = Date.now();
    this.replayChain = this.replayChain
      .then(() => {
        if (Date.now() - queuedAt > REPLAY_MAX_QUEUED_MS) {
          this.droppedReplayRequests++;
          return;
        }
        return serve();
      })
      .finally(() => this.pendingReplays--);
  }

  /** A snapshot in chunks of SNAPSHOT_CHUNK_BLOCKS blocks, or without a source the bare end marker (unsupported). */
  private async sendSnapshot(router: zmq.Router, id: Buffer): Promise<void> {
    const current = this.shape === 'current';
    const source = this.snapshotSource;
    try {
      if (!source) {
        await router.send(current ? [id, EMPTY, EMPTY, END_SEQ, EMPTY] : [id, EMPTY, END_SEQ, EMPTY]);
        return;
      }
      const snap = await source();
      const at = encodeSeq(snap.atSeq);
      const ts = Date.now() / 1000;
      let i = 0;
      // At least one chunk, so the subscriber always learns the snapshot's ts (empty cache: no events).
      const chunks = [...chunkBlocks(snap.events, SNAPSHOT_CHUNK_BLOCKS)];
      if (chunks.length === 0) chunks.push([]);
      for (const chunk of chunks) {
        if (router.closed) return;
        const payload = encodeBatch({ ts, events: chunk, dp_rank: this.dpRank }, { encoding: this.encoding });
        await router.send([id, EMPTY, SNAPSHOT_TAG, at, payload]);
        if (++i % REPLAY_CHUNK === 0) await yieldToLoop();
      }
      if (router.closed) return;
      await router.send([id, EMPTY, SNAPSHOT_TAG, at, EMPTY]);
      this.snapshotsSent++;
    } catch (err) {
      // The client went away or stopped reading; or the source failed (the client times out and falls back).
      if (!router.closed && !(err instanceof Error && /EHOSTUNREACH|EAGAIN|timed out/i.test(err.message))) {
        console.error(`kv-events publisher: snapshot failed: ${(err as Error).message}`);
      }
    }
  }

  private async sendReplay(router: zmq.Router, id: Buffer, entries: Buffered[]): Promise<void> {
    const current = this.shape === 'current';
    try {
      for (let i = 0; i < entries.length; i++) {
        if (router.closed) return;
        const { seq, payload } = entries[i]!;
        const s = encodeSeq(seq);
        await router.send(current ? [id, EMPTY, this.topic, s, payload] : [id, EMPTY, s, payload]);
        if ((i + 1) % REPLAY_CHUNK === 0) await yieldToLoop();
      }
      if (router.closed) return;
      await router.send(current ? [id, EMPTY, EMPTY, END_SEQ, EMPTY] : [id, EMPTY, END_SEQ, EMPTY]);
    } catch {
      // The client went away (EHOSTUNREACH) or stopped reading (send timeout): abandon this replay.
    }
  }
}

/** Events in batches of at most `max` blocks (a BlockStored longer than that is split, parent links kept). */
export function* chunkBlocks(events: KVEvent[], max: number): Generator<KVEvent[]> {
  let out: KVEvent[] = [];
  let n = 0;
  for (const ev of events) {
    if (ev.type !== 'BlockStored' || ev.block_hashes.length <= max - n) {
      out.push(ev);
      n += ev.type === 'BlockStored' ? ev.block_hashes.length : 1;
    } else {
      for (let k = 0; k < ev.block_hashes.length; ) {
        const take = Math.min(max - n, ev.block_hashes.length - k);
        const per = ev.block_size;
        const extra = ev.extra_keys as unknown[] | null | undefined;
        out.push({
          ...ev,
          block_hashes: ev.block_hashes.slice(k, k + take),
          parent_block_hash: k === 0 ? ev.parent_block_hash : ev.block_hashes[k - 1]!,
          token_ids: ev.token_ids.slice(k * per, (k + take) * per),
          ...(extra ? { extra_keys: extra.slice(k, k + take) } : {}),
        });
        k += take;
        n += take;
        if (n >= max) {
          yield out;
          out = [];
          n = 0;
        }
      }
      continue;
    }
    if (n >= max) {
      yield out;
      out = [];
      n = 0;
    }
  }
  if (out.length > 0) yield out;
}

/** The start seq of a well-formed request [identity, "", seq(8 B)], else null. */
function parseReplayRequest(msg: Buffer[]): bigint | null {
  if (msg.length !== 3 || msg[1]!.length !== 0 || msg[2]!.length !== 8) return null;
  const start = decodeSeq(msg[2]!);
  return start === END_OF_REPLAY_SEQ ? null : start;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * One KV-event stream, per (endpoint, rank): the socket shell around StreamState
 * (stream-state.ts), which owns every ordering and recovery decision. This file only
 * moves frames: SUB for the live stream, a DEALER replay client for what the SUB
 * missed, a timer for idle probes; it runs the actions the state machine returns
 * (apply / notice → onItem, replay → requestReplay, whose outcome goes back in).
 */
import { retryEintr } from './eintr.js';
import * as zmq from 'zeromq';
import { decodeBatch, type ArrayLayout } from './codec.js';
import { assertEndpoint, connectAddressFor } from './config.js';
import { attach, yieldToLoop } from './endpoint.js';
import { applyCurveClient, type CurveClientOptions } from './curve.js';
import { decodeSeq, END_OF_REPLAY_SEQ } from './frames.js';
import { requestReplay, type ReplayedBatch } from './replay-client.js';
import type { SharedSubscriber } from './shared-sub.js';
import { requestSnapshot } from './snapshot.js';
import { payloadDigest, StreamState, type StreamAction, type StreamBatch, type StreamCounters, type StreamNotice } from './stream-state.js';
import type { KVEventBatch } from './types.js';
import { loggerFromEnv } from '../log/logger.js';

export type { HistoryMissingReason, StreamNotice } from './stream-state.js';

export type StreamItem =
  | { kind: 'batch'; seq: bigint; topic: string; batch: KVEventBatch; replayed: boolean }
  | { kind: 'notice'; notice: StreamNotice }
  /** Replace everything built from this stream by these batches (the publisher's cache before batch atSeq). */
  | { kind: 'snapshot'; atSeq: bigint; topic: string; batches: KVEventBatch[] };

/** The stream's counters (StreamCounters: probes are sync probes of the replay endpoint, and those that found something) and its state. */
export interface StreamHealth extends StreamCounters {
  endpoint: string;
  replayEndpoint: string | null;
  topic: string;
  /** The applied history is known complete (from seq 0 or an AllBlocksCleared, nothing missing since). */
  trusted: boolean;
  lastSeq: bigint | null;
  /** now − ts of the last live batch applied, when it was applied. */
  lagMs: number | null;
  connected: boolean;
}

export interface SubscriberOptions {
  endpoint: string;
  replayEndpoint?: string | null;
  /** SUB prefix filter; '' takes every topic. */
  topic?: string;
  /** Replay from this seq at start, instead of waiting for the first live batch. */
  fromSeq?: bigint | null;
  /** A late join replays the history from 0 (default); false: start at the first live batch. */
  replayHistory?: boolean;
  /** Longest wait for the replay connection, the first reply, and between replies. Default 3000. */
  replayTimeoutMs?: number;
  /** Bind the SUB instead of connecting (for publishers that connect). Default: connect. */
  bind?: boolean;
  /** SUB receive high-water mark, in messages. Default 100000. */
  hwm?: number;
  /** Larger messages (live or replayed) make ZeroMQ drop the peer's connection. Default 64 MiB. */
  maxMessageSize?: number;
  /**
   * Probe the replay endpoint after this long without a live batch (0: never), then again
   * at doubling intervals up to 30 s while the stream stays quiet. Default 1000.
   */
  idleProbeMs?: number;
  /** Probe the replay endpoint at once when the SUB reconnects. Default true. */
  probeOnConnect?: boolean;
  /** Stop a replay after this many reply messages (a runaway replay endpoint). Default 1 000 000. */
  maxReplayReplies?: number;
  /** Replay replies gathered before they are applied, in payload bytes (then asked again from there). Default 32 MiB. */
  maxReplayBytes?: number;
  /** Live batches held during a replay (and parked out of order), in payload bytes; beyond: history_missing held_overflow. Default 64 MiB. */
  maxHeldBytes?: number;
  /** Stop a replay that takes longer than this in all (a trickling endpoint). Default 60 000. */
  maxReplayMs?: number;
  /**
   * Take the live stream from this shared bound SUB (messages of exactly `topic`) instead of a
   * socket of our own; `endpoint` then only names it. Connected means: a batch has arrived.
   */
  shared?: SharedSubscriber | null;
  /** CURVE for the SUB and the replay DEALER (the publisher's public key, and ours). */
  curve?: CurveClientOptions | null;
  /**
   * When history is gone from the replay buffer, ask the publisher for a snapshot of its cache
   * (our worker answers; vLLM and SGLang do not, and get history_missing as before). Default false.
   */
  snapshots?: boolean;
  /** How legacy array events are read (SGLang's layout differs after `medium`). Default auto. */
  arrayLayout?: ArrayLayout;
  /** Called synchronously, in order. An exception is logged, not propagated. */
  onItem: (item: StreamItem) => void;
}

export class KVEventSubscriber {
  private readonly endpoint: string;
  private readonly replayEndpoint: string | null;
  private readonly topic: string;
  private readonly replayTimeoutMs: number;
  private readonly onItem: (item: StreamItem) => void;
  private readonly state: StreamState;

  private sub: zmq.Subscriber | null = null;
  private started = false;
  private connected = false;
  private closed = false;
  private readonly abort = new AbortController();
  private replayDone: Promise<void> = Promise.resolve();
  private idleTimer: NodeJS.Timeout | null = null;
  private unregister: (() => void) | null = null;

  constructor(private readonly opts: SubscriberOptions) {
    this.endpoint = opts.endpoint;
    this.replayEndpoint = opts.replayEndpoint ?? null;
    this.topic = opts.topic ?? '';
    this.replayTimeoutMs = opts.replayTimeoutMs ?? 3000;
    this.onItem = opts.onItem;
    this.state = new StreamState({
      hasReplay: this.replayEndpoint !== null,
      topic: this.topic,
      idleProbeMs: opts.idleProbeMs,
      probeOnConnect: opts.probeOnConnect,
      maxHeldBytes: opts.maxHeldBytes,
      replayHistory: opts.replayHistory,
      snapshots: opts.snapshots,
    });
  }

  /** Connects (or binds). Never waits for the peer; throws only for an invalid endpoint. */
  async start(): Promise<void> {
    if (this.started) throw new Error('subscriber already started');
    this.started = true;
    assertEndpoint(this.endpoint);
    if (this.replayEndpoint !== null) assertEndpoint(this.replayEndpoint);
    if (this.opts.shared) {
      this.unregister = this.opts.shared.register(this.topic, (msg) => {
        if (!this.connected) {
          this.connected = true;
          this.run(this.state.connected(Date.now()));
        }
        this.onLive(msg);
      });
      this.run(this.state.start(this.opts.fromSeq ?? null));
      this.startIdleTimer();
      return;
    }
    const sub = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: this.opts.hwm ?? 100_000, maxMessageSize: this.maxMessageSize });
    if (this.opts.curve) applyCurveClient(sub, this.opts.curve);
    const up = () => {
      if (this.closed) return;
      this.connected = true;
      this.run(this.state.connected(Date.now()));
    };
    sub.events.on('connect', up);
    sub.events.on('accept', up);
    sub.events.on('disconnect', () => {
      this.connected = false;
      this.state.disconnected();
    });
    retryEintr(() => sub.subscribe(this.topic));
    try {
      await attach(sub, this.opts.bind ? this.endpoint : connectAddressFor(this.endpoint), this.opts.bind ?? false);
    } catch (err) {
      sub.close();
      throw err;
    }
    if (this.closed) {
      // close() ran while we were attaching: nothing may outlive it.
      sub.close();
      return;
    }
    this.sub = sub;
    this.run(this.state.start(this.opts.fromSeq ?? null));
    void this.receiveLoop(sub);
    this.startIdleTimer();
  }

  private startIdleTimer(): void {
    const idleMs = this.opts.idleProbeMs ?? 1000;
    if (idleMs > 0 && this.replayEndpoint !== null) {
      this.idleTimer = setInterval(() => this.run(this.state.tick(Date.now())), Math.max(50, idleMs / 4));
      this.idleTimer.unref();
    }
  }

  private onLive(msg: Buffer[]): void {
    const b = parseLive(msg, this.opts.arrayLayout);
    if (b) this.run(this.state.live(b, Date.now()));
    else this.state.malformed();
  }

  private get maxMessageSize(): number {
    return this.opts.maxMessageSize ?? 64 * 1024 * 1024;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.state.close();
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = null;
    this.connected = false;
    this.unregister?.();
    this.abort.abort();
    this.sub?.close();
    await this.replayDone;
  }

  health(): StreamHealth {
    return {
      endpoint: this.endpoint,
      replayEndpoint: this.replayEndpoint,
      topic: this.topic,
      trusted: this.state.trusted,
      lastSeq: this.state.lastSeq,
      ...this.state.counters,
      lagMs: this.state.lagMs,
      connected: this.connected,
    };
  }

  /** Whether a replay is under way (for tests and diagnostics). */
  get replaying(): boolean {
    return this.state.replaying;
  }

  // ------------------------------------------------------------------ I/O

  private async receiveLoop(sub: zmq.Subscriber): Promise<void> {
    while (!sub.closed) {
      let msg: Buffer[];
      try {
        msg = await sub.receive();
      } catch {
        if (sub.closed) return;
        await yieldToLoop();
        continue;
      }
      this.onLive(msg);
    }
  }

  private run(actions: StreamAction[]): void {
    for (const a of actions) {
      if (this.closed) return;
      switch (a.do) {
        case 'apply':
          this.emitItem({ kind: 'batch', seq: a.seq, topic: a.topic, batch: a.batch, replayed: a.replayed });
          break;
        case 'notice':
          this.emitItem({ kind: 'notice', notice: a.notice });
          break;
        case 'replay':
          this.startReplay(a.ask);
          break;
        case 'ask_snapshot':
          this.startSnapshot();
          break;
        case 'snapshot':
          this.emitItem({ kind: 'snapshot', atSeq: a.atSeq, topic: a.topic, batches: a.batches });
          break;
        case 'hold':
        case 'trust':
          break;
      }
    }
  }

  private startReplay(ask: bigint): void {
    const opts = {
      timeoutMs: this.replayTimeoutMs,
      signal: this.abort.signal,
      maxReplies: this.opts.maxReplayReplies ?? 1_000_000,
      maxTotalMs: this.opts.maxReplayMs ?? 60_000,
      maxBytes: this.opts.maxReplayBytes,
      maxMessageSize: this.maxMessageSize,
      curve: this.opts.curve ?? null,
      decode: { arrayLayout: this.opts.arrayLayout },
    };
    this.replayDone = requestReplay(this.replayEndpoint!, ask, opts).then(
      (r) => {
        if (this.closed) return;
        this.run(this.state.replayDone({ status: r.status, batches: r.batches.map(streamBatch), malformed: r.malformed }, Date.now()));
      },
      (err: unknown) => {
        loggerFromEnv('kv-events subscriber').warn(`replay failed: ${(err as Error).message}`);
        if (!this.closed) this.run(this.state.replayFailed(Date.now()));
      },
    );
  }

  private startSnapshot(): void {
    const opts = {
      timeoutMs: this.replayTimeoutMs,
      signal: this.abort.signal,
      maxMessageSize: this.maxMessageSize,
      curve: this.opts.curve ?? null,
      decode: { arrayLayout: this.opts.arrayLayout },
    };
    this.replayDone = requestSnapshot(this.replayEndpoint!, opts).then(
      (r) => {
        if (this.closed) return;
        this.run(this.state.snapshotDone(r.status === 'done' ? { status: 'done', atSeq: r.atSeq, batches: r.batches } : r, Date.now()));
      },
      (err: unknown) => {
        console.error(`kv-events subscriber: snapshot failed: ${(err as Error).message}`);
        if (!this.closed) this.run(this.state.snapshotDone({ status: 'failed' }, Date.now()));
      },
    );
  }

  private emitItem(item: StreamItem): void {
    try {
      this.onItem(item);
    } catch (err) {
      loggerFromEnv('kv-events subscriber').error(`onItem threw: ${(err as Error).stack ?? err}`);
    }
  }
}

function streamBatch(b: ReplayedBatch): StreamBatch {
  return { seq: b.seq, topic: b.topic, batch: b.batch, digest: payloadDigest(b.payload), bytes: b.payload.length };
}

/** A live PUB message [topic, seq, payload], or null when unreadable. */
export function parseLive(msg: Buffer[], arrayLayout?: ArrayLayout): StreamBatch | null {
  if (msg.length !== 3 || msg[1]!.length !== 8) return null;
  const seq = decodeSeq(msg[1]!);
  if (seq === END_OF_REPLAY_SEQ) return null;
  try {
    const payload = msg[2]!;
    return { seq, topic: msg[0]!.toString('utf8'), batch: decodeBatch(payload, { arrayLayout }), digest: payloadDigest(payload), bytes: payload.length };
  } catch {
    return null;
  }
}

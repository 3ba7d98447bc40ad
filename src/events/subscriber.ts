/**
 * One KV-event stream, per (endpoint, rank): SUB for the live stream, a DEALER
 * replay client for what the SUB missed. Hands its consumer the batches in seq
 * order, and a notice for everything that is not a plain next batch.
 *
 * Recovery rules (DESIGN.md): duplicates are dropped; a gap triggers a replay
 * from last + 1 while live batches are held; a seq that goes back with new
 * content is a publisher restart; a late join replays from 0; history that
 * cannot be had is announced (history_missing) and the stream goes on.
 *
 * Sync probes (with a replay endpoint) close the holes no live batch would reveal: on
 * reconnect (whatever was missed while away, or a publisher that restarted and has
 * published nothing yet), and when the stream goes idle (the last batches of a burst
 * lost; a late join to a quiet publisher: replay from 0), then at doubling intervals up
 * to 30 s. A probe asks from the last applied seq: the same batch back means nothing was
 * missed; later batches are applied (quietly: counted in probeFinds); another batch at
 * that seq, or none at all, means a new publisher run (reset). Unreadable replies, or no
 * answer to a probe after a reconnect, mean history_missing.
 */
import * as zmq from 'zeromq';
import { decodeBatch } from './codec.js';
import { assertEndpoint, connectAddressFor } from './config.js';
import { attach, yieldToLoop } from './endpoint.js';
import { applyCurveClient, type CurveClientOptions } from './curve.js';
import { decodeSeq, END_OF_REPLAY_SEQ } from './frames.js';
import { requestReplay, type ReplayResult } from './replay-client.js';
import type { KVEventBatch } from './types.js';

export type HistoryMissingReason = 'buffer_exceeded' | 'no_replay_endpoint' | 'replay_timeout' | 'replay_malformed';

export type StreamNotice =
  | { notice: 'gap'; expected: bigint; got: bigint }
  /** A replay finished: `batches` replayed batches were applied; `to` is the last seq applied. */
  | { notice: 'replay'; from: bigint; to: bigint; batches: number }
  | { notice: 'reset'; reason: 'restart'; lastSeq: bigint; seq: bigint }
  | { notice: 'history_missing'; reason: HistoryMissingReason; from: bigint; resumedAt: bigint | null };

export type StreamItem =
  | { kind: 'batch'; seq: bigint; topic: string; batch: KVEventBatch; replayed: boolean }
  | { kind: 'notice'; notice: StreamNotice };

export interface StreamHealth {
  endpoint: string;
  replayEndpoint: string | null;
  topic: string;
  /** The applied history is known complete (from seq 0 or an AllBlocksCleared, nothing missing since). */
  trusted: boolean;
  lastSeq: bigint | null;
  batches: number;
  gaps: number;
  replays: number;
  resets: number;
  historyMissing: number;
  malformedFrames: number;
  duplicates: number;
  /** Sync probes of the replay endpoint (connect, reconnect, idle), and those that found something. */
  probes: number;
  probeFinds: number;
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
  /** Stop a replay that takes longer than this in all (a trickling endpoint). Default 60 000. */
  maxReplayMs?: number;
  /** CURVE for the SUB and the replay DEALER (the publisher's public key, and ours). */
  curve?: CurveClientOptions | null;
  /** Called synchronously, in order. An exception is logged, not propagated. */
  onItem: (item: StreamItem) => void;
}

interface Item {
  seq: bigint;
  topic: string;
  batch: KVEventBatch;
  payload: Buffer;
  replayed: boolean;
}

/** Applied payloads remembered to tell a duplicate (same bytes) from a restart (new bytes). */
const RECENT = 1024;

export class KVEventSubscriber {
  private readonly endpoint: string;
  private readonly replayEndpoint: string | null;
  private readonly topic: string;
  private readonly replayTimeoutMs: number;
  private readonly onItem: (item: StreamItem) => void;
  private readonly h = { batches: 0, gaps: 0, replays: 0, resets: 0, historyMissing: 0, malformedFrames: 0, duplicates: 0, probes: 0, probeFinds: 0 };

  private sub: zmq.Subscriber | null = null;
  private connected = false;
  private closed = false;
  private abort = new AbortController();
  private replayDone: Promise<void> = Promise.resolve();

  /** Last applied seq; a base of from − 1 while waiting for `from`; null before anything is known. */
  private last: bigint | null = null;
  /** Live batches below this seq are ignored (set by fromSeq until the first apply). */
  private floor: bigint | null = null;
  private trusted = false;
  private lagMs: number | null = null;
  private readonly pending = new Map<bigint, Item>();
  private readonly recent = new Map<bigint, Buffer>();
  /** The latest batch ts applied since the last reset. */
  private maxTs = -Infinity;
  private replaying = false;
  private held: Item[] = [];
  private replayedApplied = 0;
  /** Topic of the last live batch: legacy-shape replay replies carry none. */
  private liveTopic: string;
  private everConnected = false;
  private lostConnection = false;
  /** When the next idle probe is due, and the quiet interval after it. */
  private nextProbeAt = Infinity;
  private probeGap = 0;
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: SubscriberOptions) {
    this.endpoint = opts.endpoint;
    this.replayEndpoint = opts.replayEndpoint ?? null;
    this.topic = opts.topic ?? '';
    this.liveTopic = this.topic;
    this.replayTimeoutMs = opts.replayTimeoutMs ?? 3000;
    this.onItem = opts.onItem;
  }

  /** Connects (or binds). Never waits for the peer; throws only for an invalid endpoint. */
  async start(): Promise<void> {
    if (this.sub) throw new Error('subscriber already started');
    assertEndpoint(this.endpoint);
    if (this.replayEndpoint !== null) assertEndpoint(this.replayEndpoint);
    const sub = new zmq.Subscriber({ linger: 0, receiveHighWaterMark: this.opts.hwm ?? 100_000, maxMessageSize: this.maxMessageSize });
    if (this.opts.curve) applyCurveClient(sub, this.opts.curve);
    const up = () => {
      this.connected = true;
      this.onConnect();
    };
    sub.events.on('connect', up);
    sub.events.on('accept', up);
    sub.events.on('disconnect', () => {
      this.connected = false;
      this.lostConnection = true;
    });
    sub.subscribe(this.topic);
    try {
      await attach(sub, this.opts.bind ? this.endpoint : connectAddressFor(this.endpoint), this.opts.bind ?? false);
    } catch (err) {
      sub.close();
      throw err;
    }
    this.sub = sub;
    const from = this.opts.fromSeq;
    if (from !== undefined && from !== null) {
      this.last = from - 1n;
      this.floor = from;
      if (this.replayEndpoint !== null) this.startReplay(from);
    }
    void this.receiveLoop(sub);
    if (this.idleMs > 0 && this.replayEndpoint !== null) {
      this.idleTimer = setInterval(() => this.onIdleTick(), Math.max(50, this.idleMs / 4));
      this.idleTimer.unref();
    }
  }

  private get idleMs(): number {
    return this.opts.idleProbeMs ?? 1000;
  }

  /** Activity: the next idle probe comes one idle period from now. */
  private touch(): void {
    this.probeGap = this.idleMs;
    this.nextProbeAt = Date.now() + this.idleMs;
  }

  private get maxMessageSize(): number {
    return this.opts.maxMessageSize ?? 64 * 1024 * 1024;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.abort.abort();
    this.sub?.close();
    await this.replayDone;
  }

  health(): StreamHealth {
    return {
      endpoint: this.endpoint,
      replayEndpoint: this.replayEndpoint,
      topic: this.topic,
      trusted: this.trusted,
      lastSeq: this.last !== null && this.last >= 0n && this.h.batches > 0 ? this.last : null,
      ...this.h,
      lagMs: this.lagMs,
      connected: this.connected,
    };
  }

  // ------------------------------------------------------------------ live stream

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
      const item = this.parseLive(msg);
      if (!item) {
        this.h.malformedFrames++;
        continue;
      }
      this.liveTopic = item.topic;
      this.touch();
      if (this.replaying) this.held.push(item);
      else {
        this.ingest(item);
        this.recover(null);
      }
    }
  }

  private parseLive(msg: Buffer[]): Item | null {
    if (msg.length !== 3 || msg[1]!.length !== 8) return null;
    const seq = decodeSeq(msg[1]!);
    if (seq === END_OF_REPLAY_SEQ) return null;
    try {
      return { seq, topic: msg[0]!.toString('utf8'), batch: decodeBatch(msg[2]!), payload: msg[2]!, replayed: false };
    } catch {
      return null;
    }
  }

  // ------------------------------------------------------------------ ordering

  /** Applies, drops, or parks one batch; never starts a replay (recover() does). */
  private ingest(item: Item): void {
    if (this.floor !== null && item.seq < this.floor) return;
    if (this.last === null) {
      if (item.seq === 0n) {
        this.last = -1n;
        this.apply(item);
      } else this.pending.set(item.seq, item);
      return;
    }
    if (item.seq === this.last + 1n) {
      this.apply(item);
      this.drainPending();
    } else if (item.seq > this.last) {
      if (this.pending.has(item.seq)) this.h.duplicates++;
      else this.pending.set(item.seq, item);
    } else if (this.isDuplicate(item)) {
      this.h.duplicates++;
    } else {
      this.restart(item);
    }
  }

  /**
   * A seq at or below the last applied one: the same batch again, or a restarted publisher?
   * Same bytes as applied = duplicate. Beyond the remembered window, a batch made after
   * everything applied (later ts) can only come from a new publisher run.
   */
  private isDuplicate(item: Item): boolean {
    const seen = this.recent.get(item.seq);
    if (seen) return seen.equals(item.payload);
    return item.batch.ts <= this.maxTs;
  }

  private restart(item: Item): void {
    this.h.resets++;
    this.emit({ notice: 'reset', reason: 'restart', lastSeq: this.last!, seq: item.seq });
    this.resetState();
    this.ingest(item);
  }

  private apply(item: Item): void {
    this.last = item.seq;
    this.floor = null;
    this.h.batches++;
    if (item.seq === 0n || item.batch.events.some((e) => e.type === 'AllBlocksCleared')) this.trusted = true;
    if (item.replayed) this.replayedApplied++;
    else this.lagMs = Date.now() - item.batch.ts * 1000;
    if (item.batch.ts > this.maxTs) this.maxTs = item.batch.ts;
    this.recent.set(item.seq, item.payload);
    if (this.recent.size > RECENT) this.recent.delete(this.recent.keys().next().value!);
    this.emitItem({ kind: 'batch', seq: item.seq, topic: item.topic, batch: item.batch, replayed: item.replayed });
  }

  private drainPending(): void {
    for (let next = this.pending.get(this.last! + 1n); next; next = this.pending.get(this.last! + 1n)) {
      this.pending.delete(next.seq);
      this.apply(next);
    }
  }

  private minPending(): bigint | null {
    let min: bigint | null = null;
    for (const s of this.pending.keys()) if (min === null || s < min) min = s;
    return min;
  }

  /** Skips to the lowest parked batch after announcing what is lost. */
  private missing(reason: HistoryMissingReason, from: bigint, resumedAt: bigint | null): void {
    this.h.historyMissing++;
    this.trusted = false;
    this.emit({ notice: 'history_missing', reason, from, resumedAt });
    if (resumedAt !== null) {
      this.last = resumedAt - 1n;
      this.drainPending();
    }
  }

  /**
   * Deals with parked batches (a hole before them): replays, or announces what is lost.
   * `after` describes the replay that just finished, to avoid asking again for what it lacked.
   */
  private recover(after: { from: bigint; lastSeq: bigint | null; result: ReplayResult } | null): void {
    while (!this.replaying && !this.closed && this.pending.size > 0) {
      const next = this.minPending()!;
      if (this.last === null) {
        // Late join (or a restart seen mid-stream): the history from 0 first.
        this.last = -1n;
        if (this.replayEndpoint === null) this.missing('no_replay_endpoint', 0n, next);
        else this.startReplay(0n);
        continue;
      }
      const want = this.last + 1n;
      if (this.replayEndpoint === null) {
        this.h.gaps++;
        this.emit({ notice: 'gap', expected: want, got: next });
        this.missing('no_replay_endpoint', want, next);
      } else if (after && after.result.status !== 'done') {
        this.missing('replay_timeout', want, next);
      } else if (after && (after.lastSeq === null || want <= after.lastSeq)) {
        // The replay that just ended should have had `want`: it is gone (or was unreadable).
        const unreadable = after.result.malformed > 0 && after.lastSeq !== null && want >= after.from;
        this.missing(unreadable ? 'replay_malformed' : 'buffer_exceeded', want, next);
      } else {
        this.h.gaps++;
        this.emit({ notice: 'gap', expected: want, got: next });
        this.startReplay(want);
      }
    }
  }

  // ------------------------------------------------------------------ sync probes

  private onConnect(): void {
    const reconnect = this.everConnected && this.lostConnection;
    const first = !this.everConnected;
    this.everConnected = true;
    this.lostConnection = false;
    if (!first && !reconnect) return;
    this.touch();
    // First connect: the idle probe (one idle period on) replays a late join if no live batch does it first.
    if (first || this.closed || this.opts.probeOnConnect === false) return;
    if (this.replayEndpoint === null) {
      // Whatever happened while away cannot be checked: say so rather than trust the tree.
      if (reconnect && this.last !== null && this.last >= 0n && this.h.batches > 0) this.missing('no_replay_endpoint', this.last + 1n, null);
      return;
    }
    this.probe(reconnect);
  }

  private onIdleTick(): void {
    const now = Date.now();
    if (this.closed || this.replaying || now < this.nextProbeAt) return;
    this.probeGap = Math.min(this.probeGap * 2, 30_000);
    this.nextProbeAt = now + this.probeGap;
    this.probe(false);
  }

  /** Asks the replay endpoint for anything after the last applied seq (from 0 when none). */
  private probe(reconnect: boolean): void {
    if (this.replaying || this.closed || this.replayEndpoint === null || this.pending.size > 0) return;
    if (this.floor !== null) return; // a fromSeq start replays on its own
    this.h.probes++;
    if (this.last === null) this.last = -1n;
    this.startReplay(this.last + 1n, reconnect ? 'reconnect' : 'probe');
  }

  /**
   * The outcome of a probe. Nothing new, or batches the live stream missed: no notice (probeFinds counts them),
   * applied. Our last batch gone from the publisher (nothing at or after it): a new run.
   */
  private finishProbe(from: bigint, result: ReplayResult, reconnect: boolean): 'handled' | 'replay' | 'new_run' {
    if (result.status !== 'done') {
      if (reconnect && from > 0n && this.h.batches > 0) this.missing('replay_timeout', from, null);
      return 'handled';
    }
    const anchored = from > 0n && this.recent.has(from - 1n);
    if (result.batches.length === 0 && result.malformed === 0) {
      if (from === 0n && this.recent.size === 0) this.trusted = true; // nothing published yet: empty is exact
      else if (anchored) {
        // The publisher holds nothing from our last seq on: it is a new run, not yet past our seq.
        this.h.resets++;
        this.emit({ notice: 'reset', reason: 'restart', lastSeq: this.last!, seq: 0n });
        this.resetState();
        return 'new_run';
      }
      return 'handled';
    }
    const fresh = result.batches.filter((b) => b.seq >= from);
    const anchor = result.batches[0];
    const anchorSame = anchor !== undefined && anchor.seq === from - 1n && this.recent.get(anchor.seq)?.equals(anchor.payload) === true;
    if (fresh.length === 0 && result.malformed > 0 && from > 0n && this.h.batches > 0) {
      // Unreadable replies where our next batches would be: what we may have missed cannot be checked.
      this.missing('replay_malformed', from, null);
      return 'handled';
    }
    if (fresh.length === 0 && anchorSame) return 'handled';
    if (fresh.length > 0) {
      this.touch();
      this.h.probeFinds++; // batches the live stream never showed: applied as replayed ones
    }
    return 'replay'; // the usual replay handling applies (without gap/replay notices)
  }

  private resetState(): void {
    this.last = null;
    this.floor = null;
    this.trusted = false;
    this.pending.clear();
    this.recent.clear();
    this.maxTs = -Infinity;
  }

  // ------------------------------------------------------------------ replay

  /**
   * Replays from `from`. When the batch before it is known, asks from there too: if the
   * publisher's batch at that seq is not the one applied, the publisher restarted and
   * its seq merely caught up with ours.
   */
  private startReplay(from: bigint, probe: 'probe' | 'reconnect' | null = null): void {
    this.replaying = true;
    const ask = from > 0n && this.recent.has(from - 1n) ? from - 1n : from;
    const opts = {
      timeoutMs: this.replayTimeoutMs,
      signal: this.abort.signal,
      maxReplies: this.opts.maxReplayReplies ?? 1_000_000,
      maxTotalMs: this.opts.maxReplayMs ?? 60_000,
      maxMessageSize: this.maxMessageSize,
      curve: this.opts.curve ?? null,
    };
    this.replayDone = requestReplay(this.replayEndpoint!, ask, opts).then(
      (result) => {
        if (this.closed) return;
        if (probe !== null) {
          this.replaying = false;
          this.h.malformedFrames += result.malformed;
          const outcome = this.finishProbe(from, result, probe === 'reconnect');
          if (outcome !== 'replay') {
            for (const item of this.takeHeld()) this.ingest(item);
            this.recover(null);
            if (outcome === 'new_run') this.probe(false); // its history from 0
            return;
          }
          this.h.malformedFrames -= result.malformed;
          this.replaying = true;
        }
        this.finishReplay(from, result, probe !== null);
      },
      (err: unknown) => console.error(`kv-events subscriber: replay failed: ${(err as Error).message}`),
    );
  }

  /** `quiet`: a probe's catch-up, counted in probeFinds, without gap/replay notices. */
  private finishReplay(from: bigint, result: ReplayResult, quiet = false): void {
    this.replaying = false;
    this.h.malformedFrames += result.malformed;
    const anchor = result.batches[0];
    if (anchor && anchor.seq === from - 1n && !this.recent.get(anchor.seq)?.equals(anchor.payload)) {
      // Not the batch we applied at that seq: the publisher restarted.
      this.restart(this.replayItem(anchor));
      for (const b of result.batches.slice(1)) this.ingest(this.replayItem(b));
      for (const item of this.takeHeld()) this.ingest(item);
      this.recover(null);
      return;
    }
    const replayed = result.batches.filter((b) => b.seq >= from);
    const lastSeq = replayed.length ? replayed[replayed.length - 1]!.seq : null;

    // The publisher's buffer starts after what we asked for: announce before applying.
    if (result.status === 'done') {
      let first = replayed[0]?.seq ?? null;
      const p = this.minPending();
      if (p !== null && (first === null || p < first)) first = p;
      if (first !== null && first > from) this.missing('buffer_exceeded', from, first);
    }
    const before = this.replayedApplied;
    for (const b of replayed) this.ingest(this.replayItem(b));
    if (result.status === 'done' && !quiet) {
      this.h.replays++;
      this.emit({ notice: 'replay', from, to: this.last ?? from - 1n, batches: this.replayedApplied - before });
    }
    for (const item of this.takeHeld()) this.ingest(item);
    this.recover({ from, lastSeq, result });
  }

  private takeHeld(): Item[] {
    const held = this.held;
    this.held = [];
    return held;
  }

  private replayItem(b: { seq: bigint; topic: string | null; batch: KVEventBatch; payload: Buffer }): Item {
    return { seq: b.seq, topic: b.topic ?? this.liveTopic, batch: b.batch, payload: b.payload, replayed: true };
  }

  // ------------------------------------------------------------------ output

  private emit(notice: StreamNotice): void {
    this.emitItem({ kind: 'notice', notice });
  }

  private emitItem(item: StreamItem): void {
    try {
      this.onItem(item);
    } catch (err) {
      console.error(`kv-events subscriber: onItem threw: ${(err as Error).stack ?? err}`);
    }
  }
}

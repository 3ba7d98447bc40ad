/**
 * The ordering and recovery rules of one KV-event stream (per endpoint, rank) as a pure
 * state machine: inputs in (live batch, replay outcome, connect/disconnect, timer tick,
 * close), actions out (apply, hold, ask replay, notice, trust change). No sockets, no
 * clocks: `now` (ms) comes with every input. The socket shell is subscriber.ts.
 *
 * Recovery rules (DESIGN.md): duplicates are dropped; a gap asks a replay from last + 1
 * while live batches are held; a seq that goes back with new content is a publisher
 * restart; a late join replays from 0; history that cannot be had is announced
 * (history_missing) and the stream goes on.
 *
 * Sync probes (with a replay endpoint) close the holes no live batch would reveal: on
 * reconnect, and when the stream goes idle, then at doubling intervals up to 30 s. A probe
 * asks from the last applied seq: the same batch back means nothing was missed; later
 * batches are applied (quietly: counted in probeFinds); another batch at that seq, or none
 * at all, means a new publisher run (reset). Unreadable replies, or no answer to a probe
 * after a reconnect, mean history_missing.
 *
 * Snapshots (option `snapshots`, our worker's extension, snapshot.ts): when history is gone
 * from the replay buffer (buffer_exceeded, late joins included), the publisher is asked for a
 * snapshot of its cache valid at a seq (ask_snapshot), live batches are held meanwhile, and
 * the tree is replaced by it (snapshot) with the batches from that seq applied on top: trust
 * is never lost. A publisher that does not answer it (vLLM, SGLang: "unsupported", or no
 * answer) gets today's history_missing, and is not asked again until it restarts.
 *
 * Memory: applied batches are remembered as a 64-bit digest of their payload (duplicate vs
 * restart), and held + parked batches are bounded in bytes (maxHeldBytes): beyond it they
 * are dropped and announced (history_missing: held_overflow).
 */
import { fmix32 } from '../hash/fmix32.js';
import type { KVEventBatch } from './types.js';

export type HistoryMissingReason =
  | 'buffer_exceeded'
  | 'no_replay_endpoint'
  | 'replay_timeout'
  | 'replay_failed'
  | 'replay_malformed'
  | 'held_overflow';

export type StreamNotice =
  | { notice: 'gap'; expected: bigint; got: bigint }
  /** A replay finished: `batches` replayed batches were applied; `to` is the last seq applied. */
  | { notice: 'replay'; from: bigint; to: bigint; batches: number }
  | { notice: 'reset'; reason: 'restart'; lastSeq: bigint; seq: bigint }
  | { notice: 'history_missing'; reason: HistoryMissingReason; from: bigint; resumedAt: bigint | null };

/** One batch as the state machine sees it: decoded, with a digest and the size of its payload. */
export interface StreamBatch {
  seq: bigint;
  /** null for a legacy-shape replay reply (no topic frame): the live topic is used. */
  topic: string | null;
  batch: KVEventBatch;
  digest: bigint;
  bytes: number;
}

/**
 * What to do. `notice` reset / history_missing mean: clear what was built from this stream.
 * `replay`: ask the replay endpoint from `ask`, then feed the outcome to replayDone/replayFailed.
 */
export type StreamAction =
  | { do: 'apply'; seq: bigint; topic: string; batch: KVEventBatch; replayed: boolean }
  | { do: 'hold'; seq: bigint }
  | { do: 'replay'; ask: bigint }
  | { do: 'notice'; notice: StreamNotice }
  | { do: 'trust'; trusted: boolean }
  /** Ask the replay endpoint for a snapshot; feed the outcome to snapshotDone. */
  | { do: 'ask_snapshot' }
  /** Replace everything built from this stream by these batches: the cache before batch `atSeq`. */
  | { do: 'snapshot'; atSeq: bigint; topic: string; batches: KVEventBatch[] };

/** A snapshot request's outcome (snapshot.ts's SnapshotResult without the byte count). */
export type SnapshotOutcome =
  | { status: 'done'; atSeq: bigint; batches: KVEventBatch[] }
  | { status: 'unsupported' | 'timeout' | 'failed' | 'cancelled' };

/**
 * A replay's outcome. `done`: end marker seen. `truncated`: stopped at the byte bound after a
 * readable prefix (asked again from where it stopped). `timeout`, `failed`, `cancelled`: incomplete.
 */
export interface ReplayOutcome {
  status: 'done' | 'truncated' | 'timeout' | 'failed' | 'cancelled';
  batches: StreamBatch[];
  malformed: number;
}

export interface StreamStateOptions {
  hasReplay: boolean;
  /** The SUB filter: the topic of replies that carry none, until a live batch is seen. */
  topic?: string;
  /** Probe after this long without a live batch (0: never). Default 1000. */
  idleProbeMs?: number;
  /** Probe at once when the SUB reconnects. Default true. */
  probeOnConnect?: boolean;
  /** Held (during a replay) plus parked (out of order) payload bytes. Default 64 MiB. */
  maxHeldBytes?: number;
  /**
   * With a replay endpoint, a late join (or an idle first probe) replays the history from 0.
   * false: start at the first live batch instead (untrusted), as a viewer that wants only what is new. Default true.
   */
  replayHistory?: boolean;
  /** When history is gone from the replay buffer, ask the publisher for a snapshot first. Default false. */
  snapshots?: boolean;
}

export interface StreamCounters {
  batches: number;
  gaps: number;
  replays: number;
  resets: number;
  historyMissing: number;
  malformedFrames: number;
  duplicates: number;
  probes: number;
  probeFinds: number;
  /** Snapshots applied; snapshot requests that ended in today's history_missing instead. */
  snapshots: number;
  snapshotFallbacks: number;
  /** Times the stream went from trusted to untrusted. */
  trustLosses: number;
}

/**
 * A 64-bit digest of the payload: tells a duplicate (same bytes) from new content at a seq.
 * Not a cryptographic hash (SHA-1 was ~3x slower and was a fifth of the live path's cost):
 * two 32-bit lanes mixed murmur3-style, both over every 8-byte block, then the tail and the
 * length, then finalised. Two different payloads share a digest with a probability of about 2^-64
 * (a publisher restart mistaken for a duplicate needs that, at the same seq, within RECENT batches).
 */
export function payloadDigest(payload: Uint8Array): bigint {
  const n = payload.byteLength;
  const dv = new DataView(payload.buffer, payload.byteOffset, n);
  let h1 = 0x9747b28c | 0;
  let h2 = 0x85ebca6b ^ n;
  const blocks = n & ~7;
  for (let i = 0; i < blocks; i += 8) {
    let k1 = dv.getInt32(i, true);
    let k2 = dv.getInt32(i + 4, true);
    k1 = Math.imul(k1, 0x239b961b);
    k1 = (k1 << 15) | (k1 >>> 17);
    k1 = Math.imul(k1, 0xab0e9789);
    h1 ^= k1;
    h1 = (h1 << 19) | (h1 >>> 13);
    h1 = (h1 + h2) | 0;
    h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0;
    k2 = Math.imul(k2, 0xab0e9789);
    k2 = (k2 << 16) | (k2 >>> 16);
    k2 = Math.imul(k2, 0x38b34ae5);
    h2 ^= k2;
    h2 = (h2 << 17) | (h2 >>> 15);
    h2 = (h2 + h1) | 0;
    h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0;
  }
  let t1 = 0;
  let t2 = 0;
  for (let i = blocks; i < n; i++) {
    const j = i - blocks;
    if (j < 4) t1 |= payload[i]! << (8 * j);
    else t2 |= payload[i]! << (8 * (j - 4));
  }
  h1 ^= Math.imul(((Math.imul(t1, 0x239b961b) << 15) | (Math.imul(t1, 0x239b961b) >>> 17)), 0xab0e9789);
  h2 ^= Math.imul(((Math.imul(t2, 0xab0e9789) << 16) | (Math.imul(t2, 0xab0e9789) >>> 16)), 0x38b34ae5);
  h1 ^= n;
  h2 ^= n;
  h1 = (h1 + h2) | 0;
  h2 = (h2 + h1) | 0;
  h1 = fmix32(h1);
  h2 = fmix32(h2);
  h1 = (h1 + h2) | 0;
  h2 = (h2 + h1) | 0;
  return (BigInt(h1 >>> 0) << 32n) | BigInt(h2 >>> 0);
}

/** Applied digests remembered to tell a duplicate (same bytes) from a restart (new bytes). */
const RECENT = 1024;
const MAX_PROBE_GAP_MS = 30_000;

interface Item extends StreamBatch {
  topic: string;
  replayed: boolean;
}

interface Replay {
  /** The seq this replay (or the first chunk of it) was for. */
  from: bigint;
  probe: 'probe' | 'reconnect' | null;
  /** Replayed batches applied so far (over truncated chunks). */
  applied: number;
}

export class StreamState {
  readonly counters: StreamCounters = { batches: 0, gaps: 0, replays: 0, resets: 0, historyMissing: 0, malformedFrames: 0, duplicates: 0, probes: 0, probeFinds: 0, snapshots: 0, snapshotFallbacks: 0, trustLosses: 0 };
  /** Last applied seq; a base of from − 1 while waiting for `from`; null before anything is known. */
  private last: bigint | null = null;
  /** Live batches below this seq are ignored (set by fromSeq until the first apply). */
  private floor: bigint | null = null;
  private trustedNow = false;
  private lag: number | null = null;
  private readonly pending = new Map<bigint, Item>();
  private readonly recent = new Map<bigint, bigint>();
  private maxTs = -Infinity;
  private replay: Replay | null = null;
  /** A snapshot asked for: what to announce if it does not come. */
  /**
   * A snapshot asked for. `before`: the seqs received before asking; the publisher made them before
   * the snapshot, so one at or past its seq cannot be real (a forged or stale frame): dropped.
   */
  private snap: { reason: HistoryMissingReason; from: bigint; before: Set<bigint> } | null = null;
  /** This publisher run did not answer a snapshot request: not asked again until it restarts. */
  private noSnapshots = false;
  private held: Item[] = [];
  private heldBytes = 0;
  private liveTopic: string;
  private everConnected = false;
  private lostConnection = false;
  private nextProbeAt = Infinity;
  private probeGap = 0;
  private closed = false;
  private out: StreamAction[] = [];
  private readonly idleMs: number;
  private readonly maxHeldBytes: number;

  constructor(private readonly opts: StreamStateOptions) {
    this.liveTopic = opts.topic ?? '';
    this.idleMs = opts.idleProbeMs ?? 1000;
    this.maxHeldBytes = opts.maxHeldBytes ?? 64 * 1024 * 1024;
  }

  // ------------------------------------------------------------------ inputs

  /** Replay from `fromSeq` at start (null: wait for the first live batch). */
  start(fromSeq: bigint | null): StreamAction[] {
    if (fromSeq !== null) {
      this.last = fromSeq - 1n;
      this.floor = fromSeq;
      if (this.opts.hasReplay) this.startReplay(fromSeq);
    }
    return this.flush();
  }

  live(b: StreamBatch, now: number): StreamAction[] {
    if (this.closed) return [];
    // Field by field, not a spread: one fixed shape for every item (this runs for every live batch).
    const item: Item = { seq: b.seq, topic: b.topic ?? this.liveTopic, batch: b.batch, digest: b.digest, bytes: b.bytes, replayed: false };
    this.liveTopic = item.topic;
    this.touch(now);
    if (this.replay || this.snap) this.hold(item);
    else {
      this.ingest(item, now);
      this.recover(null, now);
    }
    return this.flush();
  }

  /** An unreadable live frame. */
  malformed(): void {
    this.counters.malformedFrames++;
  }

  replayDone(result: ReplayOutcome, now: number): StreamAction[] {
    const r = this.replay;
    if (this.closed || !r) return [];
    if (r.probe !== null && r.applied === 0 && result.status !== 'truncated') {
      this.replay = null;
      const outcome = this.finishProbe(r.from, result, r.probe === 'reconnect');
      if (outcome !== 'replay') {
        this.counters.malformedFrames += result.malformed;
        for (const item of this.takeHeld()) this.ingest(item, now);
        this.recover(null, now);
        if (outcome === 'new_run') this.probe(false); // its history from 0
        return this.flush();
      }
      this.replay = r;
    } else if (r.probe !== null && r.applied === 0 && result.batches.some((b) => b.seq >= r.from)) this.counters.probeFinds++;
    this.finishReplay(r, result, now);
    return this.flush();
  }

  /** The replay request itself failed (rejected): never leaves the stream waiting. */
  replayFailed(now: number): StreamAction[] {
    return this.replayDone({ status: 'failed', batches: [], malformed: 0 }, now);
  }

  connected(now: number): StreamAction[] {
    const reconnect = this.everConnected && this.lostConnection;
    const first = !this.everConnected;
    this.everConnected = true;
    this.lostConnection = false;
    if (this.closed || (!first && !reconnect)) return [];
    this.touch(now);
    // First connect: the idle probe (one idle period on) replays a late join if no live batch does it first.
    if (first || this.opts.probeOnConnect === false) return [];
    if (!this.opts.hasReplay) {
      // Whatever happened while away cannot be checked: say so rather than trust the tree.
      if (this.last !== null && this.last >= 0n && this.counters.batches > 0) this.missing('no_replay_endpoint', this.last + 1n, null);
    } else this.probe(true);
    return this.flush();
  }

  disconnected(): void {
    this.lostConnection = true;
  }

  tick(now: number): StreamAction[] {
    if (this.closed || this.replay || this.snap || this.idleMs <= 0 || !this.opts.hasReplay || now < this.nextProbeAt) return [];
    this.probeGap = Math.min(this.probeGap * 2, MAX_PROBE_GAP_MS);
    this.nextProbeAt = now + this.probeGap;
    this.probe(false);
    return this.flush();
  }

  /** The outcome of an ask_snapshot. */
  snapshotDone(result: SnapshotOutcome, now: number): StreamAction[] {
    const s = this.snap;
    if (this.closed || !s) return [];
    this.snap = null;
    if (result.status !== 'done') {
      this.counters.snapshotFallbacks++;
      this.noSnapshots = true;
      // Today's behaviour: announce what is lost, resume at the first batch held.
      const items = this.takeHeld();
      let first: bigint | null = this.minPending();
      for (const i of items) if (first === null || i.seq < first) first = i.seq;
      if (this.last !== null && first !== null && first > this.last + 1n) this.missing(s.reason, s.from, first, now);
      else if (first === null) this.missing(s.reason, s.from, null, now);
      for (const item of items.sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0))) this.ingest(item, now);
      this.recover(null, now);
      return this.flush();
    }
    const at = result.atSeq;
    this.counters.snapshots++;
    this.out.push({ do: 'snapshot', atSeq: at, topic: this.liveTopic, batches: result.batches });
    this.last = at - 1n;
    this.floor = null;
    // Batches before atSeq still on their way (made before the snapshot) then read as duplicates.
    for (const b of result.batches) if (b.ts > this.maxTs) this.maxTs = b.ts;
    // Kept: what the publisher made after the snapshot. Dropped: what the snapshot holds, and
    // what came before asking yet claims a seq at or past it (it would open the same gap again).
    const impossible = (seq: bigint) => seq >= at && s.before.has(seq);
    for (const [seq, i] of this.pending) {
      if (seq >= at && !impossible(seq)) continue;
      if (impossible(seq)) this.counters.malformedFrames++;
      this.pending.delete(seq);
      this.heldBytes -= i.bytes;
    }
    this.setTrusted(true);
    this.drainPending(now);
    for (const item of this.takeHeld()) {
      if (impossible(item.seq)) this.counters.malformedFrames++;
      else if (item.seq >= at) this.ingest(item, now);
    }
    this.recover(null, now);
    return this.flush();
  }

  close(): void {
    this.closed = true;
    this.replay = null;
    this.snap = null;
    this.held = [];
    this.pending.clear();
    this.heldBytes = 0;
  }

  // ------------------------------------------------------------------ observation

  get trusted(): boolean {
    return this.trustedNow;
  }

  get lastSeq(): bigint | null {
    return this.last !== null && this.last >= 0n && this.counters.batches > 0 ? this.last : null;
  }

  get lagMs(): number | null {
    return this.lag;
  }

  get replaying(): boolean {
    return this.replay !== null || this.snap !== null;
  }

  /** Bytes of batches held during a replay or parked out of order. */
  get heldPayloadBytes(): number {
    return this.heldBytes;
  }

  // ------------------------------------------------------------------ ordering

  private flush(): StreamAction[] {
    const out = this.out;
    this.out = [];
    return out;
  }

  private setTrusted(t: boolean): void {
    if (t === this.trustedNow) return;
    this.trustedNow = t;
    if (!t) this.counters.trustLosses++;
    this.out.push({ do: 'trust', trusted: t });
  }

  private touch(now: number): void {
    this.probeGap = this.idleMs;
    this.nextProbeAt = now + this.idleMs;
  }

  private hold(item: Item): void {
    this.held.push(item);
    this.heldBytes += item.bytes;
    this.out.push({ do: 'hold', seq: item.seq });
    this.checkHeldBound();
  }

  private park(item: Item): void {
    this.pending.set(item.seq, item);
    this.heldBytes += item.bytes;
    this.checkHeldBound();
  }

  /** Past the byte bound: drop what is held and parked, and say so. */
  private checkHeldBound(): void {
    if (this.heldBytes <= this.maxHeldBytes) return;
    let from: bigint | null = null;
    for (const i of this.held) if (from === null || i.seq < from) from = i.seq;
    for (const s of this.pending.keys()) if (from === null || s < from) from = s;
    this.held = [];
    this.pending.clear();
    this.heldBytes = 0;
    this.counters.historyMissing++;
    this.setTrusted(false);
    this.out.push({ do: 'notice', notice: { notice: 'history_missing', reason: 'held_overflow', from: from ?? 0n, resumedAt: null } });
  }

  /** Applies, drops, or parks one batch; never starts a replay (recover() does). */
  private ingest(item: Item, now: number): void {
    if (this.floor !== null && item.seq < this.floor) return;
    if (this.last === null) {
      if (item.seq === 0n) {
        this.last = -1n;
        this.apply(item, now);
      } else if (!this.pending.has(item.seq)) this.park(item);
      return;
    }
    if (item.seq === this.last + 1n) {
      this.apply(item, now);
      this.drainPending(now);
    } else if (item.seq > this.last) {
      if (this.pending.has(item.seq)) this.counters.duplicates++;
      else this.park(item);
    } else if (this.isDuplicate(item)) {
      this.counters.duplicates++;
    } else {
      this.restart(item, now);
    }
  }

  /**
   * A seq at or below the last applied one: the same batch again, or a restarted publisher?
   * Same digest as applied = duplicate. Beyond the remembered window, a batch made after
   * everything applied (later ts) can only come from a new publisher run.
   */
  private isDuplicate(item: Item): boolean {
    const seen = this.recent.get(item.seq);
    if (seen !== undefined) return seen === item.digest;
    return item.batch.ts <= this.maxTs;
  }

  private restart(item: Item, now: number): void {
    this.counters.resets++;
    this.out.push({ do: 'notice', notice: { notice: 'reset', reason: 'restart', lastSeq: this.last!, seq: item.seq } });
    this.resetState();
    this.ingest(item, now);
  }

  private apply(item: Item, now: number): void {
    this.last = item.seq;
    this.floor = null;
    this.counters.batches++;
    if (!this.trustedNow && (item.seq === 0n || item.batch.events.some((e) => e.type === 'AllBlocksCleared'))) this.setTrusted(true);
    if (item.replayed) {
      if (this.replay) this.replay.applied++;
    } else this.lag = now - item.batch.ts * 1000;
    if (item.batch.ts > this.maxTs) this.maxTs = item.batch.ts;
    this.recent.set(item.seq, item.digest);
    if (this.recent.size > RECENT) this.recent.delete(this.recent.keys().next().value!);
    this.out.push({ do: 'apply', seq: item.seq, topic: item.topic, batch: item.batch, replayed: item.replayed });
  }

  private drainPending(now: number): void {
    for (let next = this.pending.get(this.last! + 1n); next; next = this.pending.get(this.last! + 1n)) {
      this.pending.delete(next.seq);
      this.heldBytes -= next.bytes;
      this.apply(next, now);
    }
  }

  private minPending(): bigint | null {
    let min: bigint | null = null;
    for (const s of this.pending.keys()) if (min === null || s < min) min = s;
    return min;
  }

  /** Skips to the lowest parked batch after announcing what is lost. */
  private missing(reason: HistoryMissingReason, from: bigint, resumedAt: bigint | null, now = 0): void {
    this.counters.historyMissing++;
    this.setTrusted(false);
    this.out.push({ do: 'notice', notice: { notice: 'history_missing', reason, from, resumedAt } });
    if (resumedAt !== null) {
      this.last = resumedAt - 1n;
      this.drainPending(now);
    }
  }

  /**
   * Deals with parked batches (a hole before them): replays, or announces what is lost.
   * `after` describes the replay that just finished, to avoid asking again for what it lacked.
   */
  private recover(after: { from: bigint; lastSeq: bigint | null; result: ReplayOutcome } | null, now: number): void {
    while (!this.replay && !this.snap && !this.closed && this.pending.size > 0) {
      const next = this.minPending()!;
      if (this.last === null && this.opts.hasReplay && this.opts.replayHistory === false) {
        this.last = next - 1n;
        this.drainPending(now);
        continue;
      }
      if (this.last === null) {
        // Late join (or a restart seen mid-stream): the history from 0 first.
        this.last = -1n;
        if (!this.opts.hasReplay) this.missing('no_replay_endpoint', 0n, next, now);
        else this.startReplay(0n);
        continue;
      }
      const want = this.last + 1n;
      if (!this.opts.hasReplay) {
        this.counters.gaps++;
        this.out.push({ do: 'notice', notice: { notice: 'gap', expected: want, got: next } });
        this.missing('no_replay_endpoint', want, next, now);
      } else if (after && after.result.status !== 'done') {
        this.missing(after.result.status === 'failed' ? 'replay_failed' : 'replay_timeout', want, next, now);
      } else if (after && (after.lastSeq === null || want <= after.lastSeq)) {
        // The replay that just ended should have had `want`: it is gone (or was unreadable).
        const unreadable = after.result.malformed > 0 && after.lastSeq !== null && want >= after.from;
        if (unreadable) this.missing('replay_malformed', want, next, now);
        else if (!this.askSnapshot('buffer_exceeded', want)) this.missing('buffer_exceeded', want, next, now);
      } else {
        this.counters.gaps++;
        this.out.push({ do: 'notice', notice: { notice: 'gap', expected: want, got: next } });
        this.startReplay(want);
      }
    }
  }

  // ------------------------------------------------------------------ sync probes

  /** Asks the replay endpoint for anything after the last applied seq (from 0 when none). */
  private probe(reconnect: boolean): void {
    if (this.replay || this.snap || this.closed || !this.opts.hasReplay || this.pending.size > 0) return;
    if (this.floor !== null) return; // a fromSeq start replays on its own
    if (this.last === null && this.opts.replayHistory === false) return;
    this.counters.probes++;
    if (this.last === null) this.last = -1n;
    this.startReplay(this.last + 1n, reconnect ? 'reconnect' : 'probe');
  }

  /**
   * The outcome of a probe. Nothing new, or batches the live stream missed: no notice (probeFinds counts them),
   * applied. Our last batch gone from the publisher (nothing at or after it): a new run.
   */
  private finishProbe(from: bigint, result: ReplayOutcome, reconnect: boolean): 'handled' | 'replay' | 'new_run' {
    if (result.status !== 'done') {
      if (reconnect && from > 0n && this.counters.batches > 0) this.missing(result.status === 'failed' ? 'replay_failed' : 'replay_timeout', from, null);
      return 'handled';
    }
    const anchored = from > 0n && this.recent.has(from - 1n);
    if (result.batches.length === 0 && result.malformed === 0) {
      if (from === 0n && this.recent.size === 0) this.setTrusted(true); // nothing published yet: empty is exact
      else if (anchored) {
        // The publisher holds nothing from our last seq on: it is a new run, not yet past our seq.
        this.counters.resets++;
        this.out.push({ do: 'notice', notice: { notice: 'reset', reason: 'restart', lastSeq: this.last!, seq: 0n } });
        this.resetState();
        return 'new_run';
      }
      return 'handled';
    }
    const fresh = result.batches.filter((b) => b.seq >= from);
    const anchor = result.batches[0];
    const anchorSame = anchor !== undefined && anchor.seq === from - 1n && this.recent.get(anchor.seq) === anchor.digest;
    if (fresh.length === 0 && result.malformed > 0 && from > 0n && this.counters.batches > 0) {
      // Unreadable replies where our next batches would be: what we may have missed cannot be checked.
      this.missing('replay_malformed', from, null);
      return 'handled';
    }
    if (fresh.length === 0 && anchorSame) return 'handled';
    if (fresh.length > 0) this.counters.probeFinds++; // batches the live stream never showed: applied as replayed ones
    return 'replay'; // the usual replay handling applies (without gap/replay notices)
  }

  private resetState(): void {
    this.noSnapshots = false; // a new publisher run: it may answer snapshots
    this.last = null;
    this.floor = null;
    this.setTrusted(false);
    for (const i of this.pending.values()) this.heldBytes -= i.bytes;
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
    this.replay = { from, probe, applied: 0 };
    this.askFrom(from);
  }

  private askFrom(from: bigint): void {
    this.out.push({ do: 'replay', ask: from > 0n && this.recent.has(from - 1n) ? from - 1n : from });
  }

  private finishReplay(r: Replay, result: ReplayOutcome, now: number): void {
    const quiet = r.probe !== null;
    this.counters.malformedFrames += result.malformed;
    // The seq this chunk was asked for: the next one after what earlier chunks applied.
    const from = r.applied > 0 && this.last !== null ? this.last + 1n : r.from;
    const anchor = result.batches[0];
    if (anchor && anchor.seq === from - 1n && this.recent.get(anchor.seq) !== anchor.digest) {
      // Not the batch we applied at that seq: the publisher restarted.
      this.replay = null;
      this.restart(this.replayItem(anchor), now);
      for (const b of result.batches.slice(1)) this.ingest(this.replayItem(b), now);
      for (const item of this.takeHeld()) this.ingest(item, now);
      this.recover(null, now);
      return;
    }
    const replayed = result.batches.filter((b) => b.seq >= from);
    const lastSeq = replayed.length ? replayed[replayed.length - 1]!.seq : null;

    // The publisher's buffer starts after what we asked for: announce before applying.
    if (result.status === 'done' || result.status === 'truncated') {
      let first = replayed[0]?.seq ?? null;
      const p = this.minPending();
      if (p !== null && (first === null || p < first)) first = p;
      if (first !== null && first > from) {
        if (this.askSnapshot('buffer_exceeded', from)) {
          // Held until the snapshot says which of them are still to apply.
          this.replay = null;
          for (const b of replayed) {
            const item = this.replayItem(b);
            this.held.push(item);
            this.heldBytes += item.bytes;
          }
          this.checkHeldBound();
          return;
        }
        this.missing('buffer_exceeded', from, first, now);
      }
    }
    for (const b of replayed) this.ingest(this.replayItem(b), now);
    if (result.status === 'truncated' && replayed.length > 0 && !this.closed) {
      // A byte-bounded chunk: ask for the rest, still holding live batches.
      this.askFrom(this.last! + 1n);
      return;
    }
    this.replay = null;
    if (result.status === 'done' && !quiet) {
      this.counters.replays++;
      this.out.push({ do: 'notice', notice: { notice: 'replay', from: r.from, to: this.last ?? r.from - 1n, batches: r.applied } });
    }
    for (const item of this.takeHeld()) this.ingest(item, now);
    this.recover({ from, lastSeq, result: result.status === 'truncated' ? { ...result, status: 'timeout' } : result }, now);
  }

  /** Asks for a snapshot instead of announcing `reason`, when that may work; false: announce it. */
  private askSnapshot(reason: HistoryMissingReason, from: bigint): boolean {
    if (!this.opts.snapshots || !this.opts.hasReplay || this.noSnapshots || this.snap || this.closed) return false;
    this.snap = { reason, from, before: new Set([...this.pending.keys(), ...this.held.map((i) => i.seq)]) };
    this.out.push({ do: 'ask_snapshot' });
    return true;
  }

  private takeHeld(): Item[] {
    const held = this.held;
    this.held = [];
    for (const i of held) this.heldBytes -= i.bytes;
    return held;
  }

  private replayItem(b: StreamBatch): Item {
    return { seq: b.seq, topic: b.topic ?? this.liveTopic, batch: b.batch, digest: b.digest, bytes: b.bytes, replayed: true };
  }
}

/**
 * The other replicas' shares of the load, merged from their load messages. Pure: no clock, no
 * sockets; every call takes `now` (ms). Per replica: the highest sequence number applied, when its
 * share expires, and its totals per source.
 */
import type { WorkerLoad } from '../load.js';
import type { LoadMessage, Totals } from './messages.js';
import type { PendingBlocks, PendingEntry } from './pending-blocks.js';

interface Share {
  seq: number;
  expiresAt: number;
  sources: Map<string, Totals>;
  /** Its keyed pending prefills (from its provisional messages), by its id, while its load messages list them. */
  pending: Map<number, PendingEntry>;
}

export type ApplyResult = 'applied' | 'stale' | 'own' | 'joined' | 'left';

export class RemoteShares {
  private readonly replicas = new Map<string, Share>();

  constructor(
    private readonly self: string,
    /** Where the keyed pending entries go (shared with this replica's own). */
    private readonly blocks: PendingBlocks | null = null,
  ) {}

  /**
   * A provisional message keyed a pending prefill of `replica`: counted until a load message of
   * that replica names its source without the id. A replica not heard from yet is ignored.
   */
  addPending(replica: string, id: number, e: PendingEntry): void {
    const sh = this.replicas.get(replica);
    if (!sh || !this.blocks || sh.pending.has(id)) return;
    sh.pending.set(id, e);
    this.blocks.add(e);
  }

  /** Applies one message; stale (seq not above the last applied) and own messages change nothing. */
  apply(m: LoadMessage, now: number): ApplyResult {
    if (m.r === this.self) return 'own';
    let sh = this.replicas.get(m.r);
    if (sh && m.q <= sh.seq) return 'stale';
    if (m.k === 'b') {
      if (!sh) return 'stale';
      this.drop(m.r, sh);
      return 'left';
    }
    const joined = !sh;
    if (!sh) this.replicas.set(m.r, (sh = { seq: 0, expiresAt: 0, sources: new Map(), pending: new Map() }));
    sh.seq = m.q;
    sh.expiresAt = now + m.ttl;
    if (m.k === 'h') sh.sources.clear();
    const named = m.s ?? {};
    for (const [src, t] of Object.entries(named)) {
      if (t[0] === 0 && t[1] === 0 && t[2] === 0) sh.sources.delete(src);
      else sh.sources.set(src, [t[0], t[1], t[2]]);
    }
    // Keyed pending entries of the sources the message restates (a heartbeat restates all) that it no longer lists.
    for (const [id, e] of sh.pending) {
      if (m.k !== 'h' && !Object.hasOwn(named, e.source)) continue;
      if (m.p?.[e.source]?.includes(id)) continue;
      sh.pending.delete(id);
      this.blocks?.remove(e);
    }
    return joined ? 'joined' : 'applied';
  }

  private drop(id: string, sh: Share): void {
    this.replicas.delete(id);
    for (const e of sh.pending.values()) this.blocks?.remove(e);
  }

  /** Drops the shares whose TTL passed; returns the replica ids dropped. */
  expire(now: number): string[] {
    const gone: string[] = [];
    for (const [id, sh] of this.replicas) {
      if (sh.expiresAt <= now) {
        this.drop(id, sh);
        gone.push(id);
      }
    }
    return gone;
  }

  /** Every remote share dropped (NATS lost: route on the local view). */
  clear(): void {
    for (const [id, sh] of this.replicas) this.drop(id, sh);
  }

  /** The sum of the live remote shares on `source`. */
  loadOf(source: string, now: number): WorkerLoad {
    let inFlight = 0;
    let pendingPrefillTokens = 0;
    let activeDecodes = 0;
    for (const sh of this.replicas.values()) {
      if (sh.expiresAt <= now) continue;
      const t = sh.sources.get(source);
      if (!t) continue;
      inFlight += t[0];
      pendingPrefillTokens += t[1];
      activeDecodes += t[2];
    }
    return { inFlight, pendingPrefillTokens, activeDecodes };
  }

  /** Replica ids with a live share. */
  peers(now: number): string[] {
    return [...this.replicas].filter(([, sh]) => sh.expiresAt > now).map(([id]) => id);
  }

  /** Sources any remote share names (tests, forget). */
  sources(): string[] {
    const s = new Set<string>();
    for (const sh of this.replicas.values()) for (const k of sh.sources.keys()) s.add(k);
    return [...s];
  }

  forget(source: string): void {
    for (const sh of this.replicas.values()) {
      sh.sources.delete(source);
      for (const [id, e] of sh.pending) if (e.source === source) sh.pending.delete(id);
    }
    this.blocks?.forget(source);
  }

  /** Keyed pending entries held for other replicas (tests). */
  pendingEntries(): number {
    let n = 0;
    for (const sh of this.replicas.values()) n += sh.pending.size;
    return n;
  }
}

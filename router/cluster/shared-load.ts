import { LocalLoad, WorkerReports, type LoadAccounting, type LoadTicket, type ReportedLoad, type WorkerLoad } from '../load.js';
import { RemoteShares } from './shares.js';
import { PendingBlocks, type PendingEntry } from './pending-blocks.js';

const add = (a: WorkerLoad, b: WorkerLoad): WorkerLoad => ({
  inFlight: a.inFlight + b.inFlight,
  pendingPrefillTokens: a.pendingPrefillTokens + b.pendingPrefillTokens,
  activeDecodes: a.activeDecodes + b.activeDecodes,
});

/** One of this replica's requests while it may still get keyed (see keyLast). */
interface Started {
  source: string;
  prefillTokens: number;
  /** Past its first byte or ended: nothing pending to key. */
  over: boolean;
  entry: { id: number; e: PendingEntry } | null;
}

/**
 * Load accounting shared by several replicas: this replica's own count (a LocalLoad) plus the live
 * shares of the others (RemoteShares, fed from NATS). `get` is the whole fleet of routers' count,
 * `local` only this replica's; every change of the local count is told to `onChange` (the
 * publisher), synchronously and without waiting on anything.
 */
export class SharedLoad implements LoadAccounting {
  readonly local: LocalLoad;
  readonly remote: RemoteShares;
  private readonly reported = new WorkerReports();
  /** Keyed pending prefills, this replica's and the others': which blocks they compute where. */
  readonly pending = new PendingBlocks();
  /** This replica's keyed pending entries by source, id → entry. */
  private readonly ownPending = new Map<string, Map<number, PendingEntry>>();
  private lastStarted: Started | null = null;
  private nextPendingId = 1;
  onChange: (source: string) => void = () => {};

  constructor(replicaId: string, private readonly maxReportAgeMs = 5000, private readonly now: () => number = Date.now) {
    this.local = new LocalLoad(maxReportAgeMs);
    this.remote = new RemoteShares(replicaId, this.pending);
  }

  get(source: string): WorkerLoad {
    const l = add(this.local.get(source), this.remote.loadOf(source, this.now()));
    const p = this.pending.view(source);
    if (p) l.pending = p;
    return l;
  }

  /**
   * The request just started on `source` (the last start(), in the same turn: the pipeline
   * commits load then tells the cluster link) computes blocks [from, to) of a prompt with these
   * keys: its pending prefill is keyed, here and, through the returned id, on the other replicas.
   * null when there is nothing to key (no such start, nothing pending, or already keyed).
   */
  keyLast(source: string, keys: Uint32Array, blockSize: number, promptTokens: number): { id: number; from: number } | null {
    const st = this.lastStarted;
    this.lastStarted = null;
    if (!st || st.source !== source || st.over || st.entry || st.prefillTokens <= 0) return null;
    const to = Math.floor(promptTokens / blockSize);
    const from = Math.max(0, Math.floor((promptTokens - st.prefillTokens) / blockSize));
    if (to <= from) return null;
    const e: PendingEntry = { source, keys, from, to, blockSize };
    const id = this.nextPendingId++;
    st.entry = { id, e };
    let m = this.ownPending.get(source);
    if (!m) this.ownPending.set(source, (m = new Map()));
    m.set(id, e);
    this.pending.add(e);
    return { id, from };
  }

  /** Ids of this replica's keyed pending prefills on `source` (load messages list them). */
  ownPendingIds(source: string): number[] {
    const m = this.ownPending.get(source);
    return m ? [...m.keys()] : [];
  }

  private unkey(st: Started): void {
    st.over = true;
    if (!st.entry) return;
    const m = this.ownPending.get(st.source);
    if (m?.delete(st.entry.id)) this.pending.remove(st.entry.e);
    if (m?.size === 0) this.ownPending.delete(st.source);
    st.entry = null;
  }

  /** Remote part only (/workers). */
  remoteOf(source: string): WorkerLoad {
    return this.remote.loadOf(source, this.now());
  }

  effective(source: string): WorkerLoad {
    return this.reported.merge(source, this.get(source), this.now(), this.maxReportAgeMs);
  }

  /** The worker's report counts every replica's requests: the part above all of ours is foreign. */
  report(source: string, r: Omit<ReportedLoad, 'at'>): void {
    this.reported.record(source, r, this.get(source), this.now());
  }

  reportedOf(source: string): ReportedLoad | undefined {
    return this.reported.of(source);
  }

  start(source: string, prefillTokens: number): LoadTicket {
    const t = this.local.start(source, prefillTokens);
    const st: Started = { source, prefillTokens: Math.max(0, Math.round(prefillTokens)), over: false, entry: null };
    this.lastStarted = st;
    this.onChange(source);
    let prefilled = false;
    let done = false;
    return {
      prefillDone: () => {
        if (prefilled || done) return;
        prefilled = true;
        t.prefillDone();
        this.unkey(st);
        this.onChange(source);
      },
      finish: () => {
        if (done) return;
        done = true;
        t.finish();
        this.unkey(st);
        this.onChange(source);
      },
    };
  }

  forget(source: string): void {
    this.local.forget(source);
    this.remote.forget(source);
    this.reported.forget(source);
    this.ownPending.delete(source);
    this.pending.forget(source);
  }

  sources(): string[] {
    return [...new Set([...this.local.sources(), ...this.reported.sources(), ...this.pending.sources()])];
  }
}

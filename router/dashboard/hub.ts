import { buildSnapshot, type Snapshot, type SnapshotState } from './snapshot.js';
import { collectInput, type DashboardSources } from './collect.js';

/** A snapshot, or null once the hub is closed (the router is stopping: end the stream). */
type Listener = (s: Snapshot | null) => void;

/**
 * Takes a snapshot every `intervalMs` while someone watches (SSE clients), and on demand
 * (the JSON endpoint, `kv-router status`). One state for all: rates are between consecutive snapshots.
 */
export class DashboardHub {
  private state: SnapshotState | null = null;
  private last: Snapshot | null = null;
  private readonly listeners = new Set<Listener>();
  private timer: NodeJS.Timeout | null = null;
  private taking: Promise<Snapshot> | null = null;
  private closed = false;

  constructor(
    private readonly sources: DashboardSources,
    private readonly intervalMs = 1000,
  ) {}

  /** A fresh snapshot (shared by concurrent callers). */
  take(): Promise<Snapshot> {
    this.taking ??= collectInput(this.sources)
      .then((input) => {
        const { snapshot, state } = buildSnapshot(input, this.state);
        this.state = state;
        this.last = snapshot;
        for (const l of this.listeners) l(snapshot);
        return snapshot;
      })
      .finally(() => (this.taking = null));
    return this.taking;
  }

  /** The latest snapshot when one is being taken every interval, else a fresh one. */
  current(): Promise<Snapshot> {
    return this.timer && this.last ? Promise.resolve(this.last) : this.take();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Every snapshot from now on; returns the unsubscribe function. */
  subscribe(l: Listener): () => void {
    if (this.closed) {
      l(null);
      return () => {};
    }
    this.listeners.add(l);
    if (!this.timer) {
      this.timer = setInterval(() => void this.take().catch(() => {}), this.intervalMs);
      this.timer.unref();
    }
    return () => {
      this.listeners.delete(l);
      if (this.listeners.size === 0) this.stop();
    };
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The router stops: live streams end now (a graceful drain would otherwise wait for them until its deadline). */
  close(): void {
    this.closed = true;
    this.stop();
    for (const l of [...this.listeners]) l(null);
    this.listeners.clear();
  }
}

import type { WorkerConfig } from '../config.js';
import { workerIdOf } from '../config.js';
import type { LoadView } from '../load.js';
import { sourceId, type WorkerEntry } from '../membership.js';
import type { Discovery } from './discovery.js';
import { configKey, mergeSets, reconcile } from './reconcile.js';

export interface DiscoveryControllerOptions {
  registry: {
    add(cfg: WorkerConfig): Promise<WorkerEntry>;
    remove(id: string): Promise<boolean>;
    get(id: string): WorkerEntry | undefined;
  };
  /** This router's own in-flight counts (a draining worker leaves when its count is 0). */
  load: Pick<LoadView, 'get'>;
  sources: Discovery[];
  /** A draining worker is removed after this long even with requests still in flight. */
  drainTimeoutMs: number;
  /** How often a draining worker's in-flight count is looked at. */
  drainPollMs?: number;
  log?: (msg: string) => void;
}

interface Drain {
  cfg: WorkerConfig;
  entry: WorkerEntry;
  cancelled: boolean;
}

/**
 * The I/O shell around reconcile(): keeps each source's latest set, applies the steps to the
 * registry one pass at a time (a change during a pass triggers one more pass), drains leaving
 * workers. Only workers it added are its to remove (the admin API's own stay).
 */
export class DiscoveryController {
  private readonly sets = new Map<Discovery, WorkerConfig[]>();
  private readonly managed = new Map<string, WorkerConfig>();
  private readonly draining = new Map<string, Drain>();
  /** Configs whose add failed: not retried until the config changes. */
  private readonly failed = new Map<string, string>();
  private running: Promise<void> | null = null;
  private dirty = false;
  private live = false;
  private closed = false;
  private readonly log: (msg: string) => void;

  constructor(private readonly o: DiscoveryControllerOptions) {
    this.log = o.log ?? (() => {});
  }

  /** Starts every source and applies their first sets; a worker that cannot be added then is a ConfigError. */
  async start(): Promise<void> {
    for (const s of this.o.sources) {
      await s.start((workers) => {
        this.sets.set(s, workers);
        if (this.live) this.schedule();
      });
    }
    await this.pass(true);
    this.live = true;
    if (this.dirty) this.schedule();
  }

  /** Ids being drained (tests, /workers). */
  drainingIds(): string[] {
    return [...this.draining.keys()];
  }

  /** Resolves when no pass is running or pending (tests). */
  async settled(): Promise<void> {
    while (this.running) await this.running;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.o.sources.map((s) => s.close().catch(() => {})));
    await this.settled();
    for (const d of this.draining.values()) d.cancelled = true;
    this.draining.clear();
  }

  private schedule(): void {
    if (this.closed) return;
    this.dirty = true;
    this.running ??= (async () => {
      while (this.dirty && !this.closed) {
        this.dirty = false;
        try {
          await this.pass(false);
        } catch (e) {
          this.log(`discovery: ${(e as Error).message}`);
        }
      }
      this.running = null;
    })();
  }

  private async pass(strict: boolean): Promise<void> {
    this.dirty = false;
    // Removed meanwhile by someone else (DELETE /workers): no longer ours; a later set re-adds it.
    for (const id of this.managed.keys()) if (!this.o.registry.get(id)) this.managed.delete(id);
    const { workers: desired, conflicts } = mergeSets([...this.sets.values()]);
    for (const id of conflicts) this.log(`discovery: worker "${id}" is given twice with different configs; the first is used`);
    const drainingCfgs = new Map([...this.draining].map(([id, d]) => [id, d.cfg]));
    for (const step of reconcile(this.managed, drainingCfgs, desired)) {
      if (this.closed) return;
      if (step.do === 'drain') this.startDrain(step.id);
      else if (step.do === 'undrain') {
        const d = this.draining.get(step.id)!;
        d.cancelled = true;
        d.entry.draining = false;
        this.draining.delete(step.id);
        this.managed.set(step.id, d.cfg);
        this.log(`worker ${step.id} wanted again: back in rotation`);
      } else {
        const id = workerIdOf(step.worker);
        const key = configKey(step.worker);
        if (!strict && this.failed.get(id) === key) continue;
        try {
          await this.o.registry.add(step.worker);
          this.managed.set(id, step.worker);
          this.failed.delete(id);
        } catch (e) {
          if (strict) throw e;
          this.failed.set(id, key);
          this.log(`discovery: cannot add worker "${id}": ${(e as Error).message}`);
        }
      }
    }
  }

  private inFlight(w: WorkerEntry): number {
    let n = 0;
    for (const r of w.ranks) n += this.o.load.get(sourceId(w.id, r)).inFlight;
    return n;
  }

  private startDrain(id: string): void {
    const cfg = this.managed.get(id)!;
    this.managed.delete(id);
    const entry = this.o.registry.get(id);
    if (!entry) return;
    entry.draining = true;
    const d: Drain = { cfg, entry, cancelled: false };
    this.draining.set(id, d);
    const t0 = Date.now();
    const bound = this.o.drainTimeoutMs;
    const every = this.o.drainPollMs ?? 20;
    this.log(`worker ${id} leaving: no new requests, ${this.inFlight(entry)} in flight`);
    void (async () => {
      while (!d.cancelled && !this.closed && this.inFlight(entry) > 0 && Date.now() - t0 < bound) {
        await new Promise((r) => setTimeout(r, every));
      }
      if (d.cancelled || this.closed) return;
      const left = this.inFlight(entry);
      this.draining.delete(id);
      if (this.o.registry.get(id) === entry) await this.o.registry.remove(id);
      this.log(`worker ${id} left after ${Date.now() - t0} ms${left > 0 ? ` with ${left} request(s) still in flight (drain bound ${bound} ms)` : ''}`);
      this.schedule(); // a changed config of the same id can be added now
    })();
  }
}

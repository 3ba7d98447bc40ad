import type { WorkerConfig } from './config.js';
import { ConfigError, ranksOf, workerIdOf } from './config.js';
import { CurveConfigSchema, curveClientFromConfig, type CurveClientOptions } from '../src/events/curve.js';
import { SharedStreams, StreamFeed, streamEndpoint, type StreamSink } from './streams.js';

export type HealthState = 'unknown' | 'healthy' | 'unhealthy';

/** A model a worker serves, as its GET /v1/models lists it. */
export interface ServedModel {
  id: string;
  /** vLLM's max_model_len (prompt + output tokens); null when the worker does not say. */
  maxModelLen: number | null;
  /** A LoRA adapter's base model (vLLM's ModelCard.parent); null for a base model. */
  parent?: string | null;
}

export interface WorkerEntry {
  id: string;
  url: string;
  config: WorkerConfig;
  ranks: number[];
  /**
   * sourceId(id, rank) of each rank, in `ranks` order: made once, so the index, the load maps and
   * every decision key their maps by the same string (a fresh one per candidate per decision was
   * allocated and hashed again, and compared by content at every lookup).
   */
  sources: string[];
  streams: Map<number, StreamFeed>;
  state: HealthState;
  consecutiveFailures: number;
  lastError: string | null;
  lastProbeAt: number | null;
  addedAt: number;
  /** Stalls in a row (engine stuck while /health answers); reset by progress. */
  stalls: number;
  /** After a stall, good probes do not bring the worker back before this time. */
  stalledUntil: number;
  /** What its GET /v1/models lists; null until learned (or if it has no such route). */
  models: ServedModel[] | null;
  /** Leaving (discovery): out of candidates, removed once its in-flight requests finish. */
  draining: boolean;
}

/** The index's per-source lifecycle: the membership owns it (the index never creates a source implicitly). */
export interface SourceLifecycle extends StreamSink {
  addSource(source: string): void;
  removeSource(source: string): void;
}

export interface MembershipOptions {
  sources: SourceLifecycle;
  /** Connect mode: the router binds this SUB endpoint (plus rank) and publishers connect to it; streams are told apart by topic. */
  eventsBind?: string | null;
  log?: (msg: string) => void;
}

export const sourceId = (workerId: string, rank: number) => `${workerId}:${rank}`;

/** Who is in the fleet: workers added and removed (by config, the admin API, later discovery), with their event feeds. */
export class Membership {
  private readonly workers = new Map<string, WorkerEntry>();
  private readonly leaveHandlers: ((w: WorkerEntry) => void)[] = [];
  private closed = false;
  private readonly log: (msg: string) => void;
  private readonly shared: SharedStreams | null;

  constructor(private readonly opts: MembershipOptions) {
    this.log = opts.log ?? (() => {});
    this.shared = opts.eventsBind ? new SharedStreams(opts.eventsBind) : null;
  }

  /** Called once per removed worker, after its feeds stopped and its sources left the index. */
  onLeave(fn: (w: WorkerEntry) => void): void {
    this.leaveHandlers.push(fn);
  }

  async add(cfg: WorkerConfig): Promise<WorkerEntry> {
    if (this.closed) throw new Error('registry closed');
    const id = workerIdOf(cfg);
    if (this.workers.has(id)) throw new ConfigError(`worker "${id}" already exists`);
    const url = cfg.url.replace(/\/+$/, '');
    const ranks = ranksOf(cfg);
    const w: WorkerEntry = {
      id,
      url,
      config: cfg,
      ranks,
      sources: ranks.map((r) => sourceId(id, r)),
      streams: new Map(),
      state: 'unknown',
      consecutiveFailures: 0,
      lastError: null,
      lastProbeAt: null,
      addedAt: Date.now(),
      stalls: 0,
      stalledUntil: 0,
      models: null,
      draining: false,
    };
    // Validate every endpoint before starting anything.
    const feeds: StreamFeed[] = [];
    if (cfg.kv_events) {
      const ev = cfg.kv_events;
      let curve: CurveClientOptions | null = null;
      if (ev.curve !== undefined) {
        const c = CurveConfigSchema.safeParse(ev.curve);
        if (!c.success) throw new ConfigError(`worker "${id}": kv_events.curve: ${c.error.issues.map((i) => `${i.path.join('.') || '(curve)'}: ${i.message}`).join('; ')}`);
        curve = curveClientFromConfig(c.data);
      }
      if (this.shared) {
        const clash = this.list().find((o) => o.config.kv_events?.topic === ev.topic);
        if (clash) throw new ConfigError(`worker "${id}": topic "${ev.topic}" is already worker "${clash.id}"'s; with events_bind every worker needs its own topic`);
      }
      for (const [i, r] of w.ranks.entries()) {
        const ep = streamEndpoint(ev.endpoint, url, r);
        const rep = ev.replay_endpoint ? streamEndpoint(ev.replay_endpoint, url, r) : null;
        const shared = this.shared ? await this.shared.forRank(r) : undefined;
        feeds.push(new StreamFeed(w.sources[i]!, ep, rep, ev.topic, this.opts.sources, this.log, curve, { ...(shared ? { shared } : {}), arrayLayout: ev.array_layout }));
      }
    }
    this.workers.set(id, w);
    for (const s of w.sources) this.opts.sources.addSource(s);
    feeds.forEach((f, i) => w.streams.set(w.ranks[i]!, f));
    try {
      await Promise.all(feeds.map((f) => f.start()));
    } catch (e) {
      await this.remove(id);
      throw new ConfigError(`worker "${id}": cannot subscribe to its events: ${(e as Error).message}`);
    }
    this.log(`worker ${id} added (${url}, ranks ${w.ranks.join(',')}${cfg.kv_events ? '' : ', no events'})`);
    return w;
  }

  async remove(id: string): Promise<boolean> {
    const w = this.workers.get(id);
    if (!w) return false;
    this.workers.delete(id);
    await Promise.all([...w.streams.values()].map((f) => f.close().catch(() => {})));
    for (const s of w.sources) this.opts.sources.removeSource(s);
    for (const fn of this.leaveHandlers) fn(w);
    this.log(`worker ${id} removed`);
    return true;
  }

  get(id: string): WorkerEntry | undefined {
    return this.workers.get(id);
  }

  /** Still a member (not removed meanwhile, not replaced by a new entry under the same id). */
  isCurrent(w: WorkerEntry): boolean {
    return this.workers.get(w.id) === w;
  }

  list(): WorkerEntry[] {
    return [...this.workers.values()];
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.workers.keys()].map((id) => this.remove(id)));
    await this.shared?.close();
  }
}

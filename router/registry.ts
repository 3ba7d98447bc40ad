import type { RouterConfig, WorkerConfig } from './config.js';
import { ConfigError, ranksOf, workerIdOf } from './config.js';
import type { LoadTracker } from './load.js';
import type { Candidate } from './policies/policy.js';
import { CurveConfigSchema, curveClientFromConfig, type CurveClientOptions } from '../src/events/curve.js';
import { StreamFeed, streamEndpoint, type StreamHealth, type StreamSink } from './streams.js';
import { tokenizerKeyOf } from './tokenize-pool.js';

export type HealthState = 'unknown' | 'healthy' | 'unhealthy';

export interface WorkerEntry {
  id: string;
  url: string;
  config: WorkerConfig;
  ranks: number[];
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
}

export interface IndexLike extends StreamSink {
  addSource(source: string): void;
  removeSource(source: string): void;
  stats(source: string): { blocks: number; nodes: number; provisionalBlocks: number };
}

export interface RegistryOptions {
  index: IndexLike;
  load: LoadTracker;
  health: RouterConfig['health'];
  /** A source left: policies forget it. */
  onSourceRemoved?: (source: string) => void;
  log?: (msg: string) => void;
}

export const sourceId = (workerId: string, rank: number) => `${workerId}:${rank}`;

/**
 * The workers the router knows, their event streams (one subscriber per rank feeding the index),
 * and their health: periodic probes of GET /health; `failure_threshold` consecutive failures
 * (probes or connection failures of proxied requests) take a worker out of rotation, one good probe brings it back.
 */
export class Registry {
  private readonly workers = new Map<string, WorkerEntry>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly log: (msg: string) => void;
  private readonly noLoadEndpoint = new Set<string>();
  /** Proxied requests per worker still waiting for their first byte (aborted when the worker leaves rotation). */
  private readonly pending = new Map<string, Map<AbortController, { since: number; streaming: boolean }>>();
  /** Last time any response from the worker moved (a first byte or a later chunk). */
  private readonly progressAt = new Map<string, number>();

  constructor(private readonly opts: RegistryOptions) {
    this.log = opts.log ?? (() => {});
  }

  startProbing(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.probeAll(), this.opts.health.interval_ms);
    this.timer.unref();
  }

  async add(cfg: WorkerConfig): Promise<WorkerEntry> {
    if (this.closed) throw new Error('registry closed');
    const id = workerIdOf(cfg);
    if (this.workers.has(id)) throw new ConfigError(`worker "${id}" already exists`);
    const url = cfg.url.replace(/\/+$/, '');
    const w: WorkerEntry = {
      id,
      url,
      config: cfg,
      ranks: ranksOf(cfg),
      streams: new Map(),
      state: 'unknown',
      consecutiveFailures: 0,
      lastError: null,
      lastProbeAt: null,
      addedAt: Date.now(),
      stalls: 0,
      stalledUntil: 0,
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
      for (const r of w.ranks) {
        const ep = streamEndpoint(ev.endpoint, url, r);
        const rep = ev.replay_endpoint ? streamEndpoint(ev.replay_endpoint, url, r) : null;
        this.opts.index.addSource(sourceId(id, r));
        feeds.push(new StreamFeed(sourceId(id, r), ep, rep, ev.topic, this.opts.index, this.log, curve));
      }
    }
    this.workers.set(id, w);
    feeds.forEach((f, i) => w.streams.set(w.ranks[i]!, f));
    try {
      await Promise.all(feeds.map((f) => f.start()));
    } catch (e) {
      await this.remove(id);
      throw new ConfigError(`worker "${id}": cannot subscribe to its events: ${(e as Error).message}`);
    }
    this.log(`worker ${id} added (${url}, ranks ${w.ranks.join(',')}${cfg.kv_events ? '' : ', no events'})`);
    void this.probe(w);
    return w;
  }

  async remove(id: string): Promise<boolean> {
    const w = this.workers.get(id);
    if (!w) return false;
    this.workers.delete(id);
    this.progressAt.delete(id);
    await Promise.all([...w.streams.values()].map((f) => f.close().catch(() => {})));
    for (const r of w.ranks) {
      const s = sourceId(id, r);
      this.opts.index.removeSource(s);
      this.opts.load.forget(s);
      this.opts.onSourceRemoved?.(s);
    }
    this.log(`worker ${id} removed`);
    return true;
  }

  get(id: string): WorkerEntry | undefined {
    return this.workers.get(id);
  }

  list(): WorkerEntry[] {
    return [...this.workers.values()];
  }

  healthyCount(): number {
    let n = 0;
    for (const w of this.workers.values()) if (w.state === 'healthy') n++;
    return n;
  }

  /** Every (worker, rank) of every healthy worker, with its load and trust. */
  candidates(): Candidate[] {
    const out: Candidate[] = [];
    for (const w of this.workers.values()) {
      if (w.state !== 'healthy') continue;
      const tk = tokenizerKeyOf(w.config.tokenizer);
      for (const r of w.ranks) {
        const source = sourceId(w.id, r);
        const feed = w.streams.get(r);
        out.push({
          workerId: w.id,
          rank: r,
          source,
          trusted: feed ? feed.health().trusted : false,
          blockSize: feed?.blockSize ?? w.config.block_size,
          tokenizerKey: tk,
          load: this.opts.load.effective(source),
        });
      }
    }
    return out;
  }

  streamHealth(w: WorkerEntry, rank: number): StreamHealth | null {
    return w.streams.get(rank)?.health() ?? null;
  }

  /**
   * Tracks a proxied request that has not had its first byte yet: if the worker is taken out of
   * rotation meanwhile, the request is aborted so the proxy can move it to the next worker instead
   * of waiting out the header timeout on a hung worker. Returns the function that stops tracking.
   */
  trackPending(id: string, ac: AbortController, streaming = false): () => void {
    let reqs = this.pending.get(id);
    if (!reqs) this.pending.set(id, (reqs = new Map()));
    reqs.set(ac, { since: Date.now(), streaming });
    return () => {
      reqs.delete(ac);
      if (reqs.size === 0 && this.pending.get(id) === reqs) this.pending.delete(id);
    };
  }

  /** A response from the worker moved (first byte or a later chunk): its engine is alive. */
  progress(id: string): void {
    this.progressAt.set(id, Date.now());
    const w = this.workers.get(id);
    if (w && w.stalls > 0 && w.state === 'healthy') w.stalls = 0;
  }

  /** Takes out of rotation the workers whose engine looks stuck (see health.stall_timeout_ms). */
  checkStalls(now = Date.now()): void {
    const limit = this.opts.health.stall_timeout_ms;
    if (!limit) return;
    for (const [id, reqs] of this.pending) {
      const w = this.workers.get(id);
      if (!w || w.state !== 'healthy') continue;
      let oldest = Infinity;
      for (const r of reqs.values()) if (r.streaming && r.since < oldest) oldest = r.since;
      if (now - oldest < limit || now - (this.progressAt.get(id) ?? 0) < limit) continue;
      w.stalls++;
      w.stalledUntil = now + Math.min(limit * 2 ** (w.stalls - 1), 600_000);
      this.takeOut(w, `stalled: a streamed request waited ${Math.round((now - oldest) / 1000)} s for its first byte and no response moved meanwhile (engine stuck?); out of rotation for ${Math.round((w.stalledUntil - now) / 1000)} s`);
    }
  }

  /** A proxied request could not reach the worker: counts like a failed probe. */
  reportFailure(id: string, err: string): void {
    const w = this.workers.get(id);
    if (w) this.fail(w, err);
  }

  async probeAll(): Promise<void> {
    this.checkStalls();
    await Promise.all([...this.workers.values()].map((w) => this.probe(w)));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([...this.workers.keys()].map((id) => this.remove(id)));
  }

  private async probe(w: WorkerEntry): Promise<void> {
    const t = this.opts.health.timeout_ms;
    try {
      const res = await fetch(`${w.url}/health`, { signal: AbortSignal.timeout(t) });
      await res.arrayBuffer().catch(() => {});
      if (!res.ok) throw new Error(`GET /health: HTTP ${res.status}`);
    } catch (e) {
      if (this.workers.get(w.id) === w) this.fail(w, errText(e));
      return;
    }
    if (this.workers.get(w.id) !== w) return;
    w.lastProbeAt = Date.now();
    if (w.stalledUntil > w.lastProbeAt) return; // /health answers, but the engine stalled: sit out the penalty
    w.consecutiveFailures = 0;
    w.lastError = null;
    if (w.state !== 'healthy') this.log(`worker ${w.id} healthy`);
    w.state = 'healthy';
    if (this.opts.health.poll_load && w.ranks.length === 1 && !this.noLoadEndpoint.has(w.id)) await this.pollLoad(w, t);
  }

  private async pollLoad(w: WorkerEntry, timeoutMs: number): Promise<void> {
    try {
      const res = await fetch(`${w.url}/load`, { signal: AbortSignal.timeout(timeoutMs) });
      if (res.status === 404) {
        this.noLoadEndpoint.add(w.id);
        await res.arrayBuffer().catch(() => {});
        return;
      }
      if (!res.ok) return;
      const j = (await res.json()) as Record<string, unknown>;
      const n = (k: string) => (typeof j[k] === 'number' ? (j[k] as number) : 0);
      this.opts.load.report(sourceId(w.id, w.ranks[0]!), {
        running: n('running'),
        waiting: n('waiting'),
        pendingPrefillTokens: n('pending_prefill_tokens'),
      });
    } catch {
      /* load is advisory */
    }
  }

  private fail(w: WorkerEntry, err: string): void {
    w.lastProbeAt = Date.now();
    w.consecutiveFailures++;
    w.lastError = err;
    if (w.consecutiveFailures >= this.opts.health.failure_threshold && w.state !== 'unhealthy') {
      this.takeOut(w, `${w.consecutiveFailures} failures: ${err}`);
    }
  }

  /** Out of rotation; requests still waiting for a first byte are aborted so the proxy moves them on. */
  private takeOut(w: WorkerEntry, why: string): void {
    w.state = 'unhealthy';
    w.lastError = why;
    this.log(`worker ${w.id} out of rotation after ${why}`);
    for (const ac of this.pending.get(w.id)?.keys() ?? []) ac.abort(new Error(`worker ${w.id} out of rotation: ${why}`));
    this.pending.delete(w.id);
  }
}

function errText(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  if (err?.name === 'TimeoutError') return 'probe timed out';
  return err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}

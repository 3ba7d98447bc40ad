import type { RouterConfig } from './config.js';
import type { LoadAccounting } from './load.js';
import { sourceId, type Membership, type WorkerEntry } from './membership.js';
import { parseModelList } from './models.js';

export interface HealthOptions {
  membership: Membership;
  load: LoadAccounting;
  health: RouterConfig['health'];
  log?: (msg: string) => void;
}

/**
 * Who is in rotation: periodic probes of GET /health; `failure_threshold` consecutive failures
 * (probes or failed attempts of proxied requests) take a worker out of rotation, one good probe
 * brings it back. Also learns what each worker serves (GET /v1/models) and its own queue (GET /load).
 */
export class Health {
  private timer: NodeJS.Timeout | null = null;
  private readonly log: (msg: string) => void;
  private readonly noLoadEndpoint = new Set<string>();
  /** Proxied requests per worker still waiting for their first byte (aborted when the worker leaves rotation). */
  private readonly pending = new Map<string, Map<AbortController, { since: number; streaming: boolean }>>();
  /** Last time any response from the worker moved (a first byte or a later chunk). */
  private readonly progressAt = new Map<string, number>();

  constructor(private readonly opts: HealthOptions) {
    this.log = opts.log ?? (() => {});
    opts.membership.onLeave((w) => this.forget(w.id));
  }

  startProbing(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.probeAll(), this.opts.health.interval_ms);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Maps kept per worker (tests: nothing outlives a removed worker). */
  trackedWorkers(): string[] {
    return [...new Set([...this.noLoadEndpoint, ...this.pending.keys(), ...this.progressAt.keys(), ...this.modelsAskedAt.keys()])];
  }

  /**
   * Tracks a proxied request that has not had its first byte yet: if the worker is taken out of
   * rotation meanwhile, the request is aborted so the proxy stops waiting out the header timeout
   * on a hung worker. Returns the function that stops tracking.
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
    const w = this.opts.membership.get(id);
    if (!w) return;
    this.progressAt.set(id, Date.now());
    if (w.stalls > 0 && w.state === 'healthy') w.stalls = 0;
  }

  /** Takes out of rotation the workers whose engine looks stuck (see health.stall_timeout_ms). */
  checkStalls(now = Date.now()): void {
    const limit = this.opts.health.stall_timeout_ms;
    if (!limit) return;
    for (const [id, reqs] of this.pending) {
      const w = this.opts.membership.get(id);
      if (!w || w.state !== 'healthy') continue;
      let oldest = Infinity;
      for (const r of reqs.values()) if (r.streaming && r.since < oldest) oldest = r.since;
      if (now - oldest < limit || now - (this.progressAt.get(id) ?? 0) < limit) continue;
      w.stalls++;
      w.stalledUntil = now + Math.min(limit * 2 ** (w.stalls - 1), 600_000);
      this.takeOut(w, `stalled: a streamed request waited ${Math.round((now - oldest) / 1000)} s for its first byte and no response moved meanwhile (engine stuck?); out of rotation for ${Math.round((w.stalledUntil - now) / 1000)} s`);
    }
  }

  /** A proxied request could not reach the worker: counts like a failed probe. True when this took it out of rotation. */
  reportFailure(id: string, err: string): boolean {
    const w = this.opts.membership.get(id);
    return w ? this.fail(w, err) : false;
  }

  async probeAll(): Promise<void> {
    this.checkStalls();
    await Promise.all(this.opts.membership.list().map((w) => this.probe(w)));
  }

  async probe(w: WorkerEntry): Promise<void> {
    const t = this.opts.health.timeout_ms;
    const current = () => this.opts.membership.isCurrent(w);
    try {
      const res = await fetch(`${w.url}/health`, { signal: AbortSignal.timeout(t) });
      await res.arrayBuffer().catch(() => {});
      if (!res.ok) throw new Error(`GET /health: HTTP ${res.status}`);
    } catch (e) {
      if (current()) this.fail(w, errText(e));
      return;
    }
    if (!current()) return;
    w.lastProbeAt = Date.now();
    if (w.stalledUntil > w.lastProbeAt) return; // /health answers, but the engine stalled: sit out the penalty
    w.consecutiveFailures = 0;
    w.lastError = null;
    // What it serves (and its context length), learned in the background on every return to
    // rotation: a hung engine behind a live /health must not hold up the probe loop.
    if (w.state !== 'healthy' || w.models === null || this.modelsStale(w)) void this.learnModels(w, t);
    if (w.state !== 'healthy') this.log(`worker ${w.id} healthy`);
    w.state = 'healthy';
    if (this.opts.health.poll_load && w.ranks.length === 1 && !this.noLoadEndpoint.has(w.id)) await this.pollLoad(w, t);
  }

  private readonly learning = new Set<WorkerEntry>();
  /** When each worker's /v1/models was last asked for (refreshed every health.models_refresh_ms). */
  private readonly modelsAskedAt = new Map<string, number>();

  private modelsStale(w: WorkerEntry): boolean {
    const every = this.opts.health.models_refresh_ms;
    return every > 0 && Date.now() - (this.modelsAskedAt.get(w.id) ?? 0) >= every;
  }

  private async learnModels(w: WorkerEntry, timeoutMs: number): Promise<void> {
    if (this.learning.has(w)) return;
    this.learning.add(w);
    this.modelsAskedAt.set(w.id, Date.now());
    // Until it answers, it does not say (requests are not checked against it).
    if (w.models === null) w.models = [];
    try {
      const res = await fetch(`${w.url}/v1/models`, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) {
        await res.arrayBuffer().catch(() => {});
        // No such route: it serves whatever it is asked (requests are not checked against it).
        if (res.status === 404 && this.opts.membership.isCurrent(w)) w.models = [];
        return;
      }
      const models = parseModelList(await res.json());
      if (models && this.opts.membership.isCurrent(w)) w.models = models;
    } catch {
      /* unknown until it next returns to rotation */
    } finally {
      this.learning.delete(w);
    }
  }

  private async pollLoad(w: WorkerEntry, timeoutMs: number): Promise<void> {
    try {
      const res = await fetch(`${w.url}/load`, { signal: AbortSignal.timeout(timeoutMs) });
      if (res.status === 404) {
        if (this.opts.membership.isCurrent(w)) this.noLoadEndpoint.add(w.id);
        await res.arrayBuffer().catch(() => {});
        return;
      }
      if (!res.ok) return;
      const j = (await res.json()) as Record<string, unknown>;
      if (!this.opts.membership.isCurrent(w)) return;
      const n = (k: string) => (typeof j[k] === 'number' ? (j[k] as number) : 0);
      this.opts.load.report(sourceId(w.id, w.ranks[0]!), {
        running: n('running'),
        waiting: n('waiting'),
        pendingPrefillTokens: n('pending_prefill_tokens'),
        ...(typeof j.num_blocks === 'number' ? { numBlocks: j.num_blocks } : {}),
      });
    } catch {
      /* load is advisory */
    }
  }

  private fail(w: WorkerEntry, err: string): boolean {
    w.lastProbeAt = Date.now();
    w.consecutiveFailures++;
    w.lastError = err;
    if (w.consecutiveFailures >= this.opts.health.failure_threshold && w.state !== 'unhealthy') {
      this.takeOut(w, `${w.consecutiveFailures} failures: ${err}`);
      return true;
    }
    return false;
  }

  /** Out of rotation; requests still waiting for a first byte are aborted. */
  private takeOut(w: WorkerEntry, why: string): void {
    w.state = 'unhealthy';
    w.lastError = why;
    this.log(`worker ${w.id} out of rotation after ${why}`);
    for (const ac of this.pending.get(w.id)?.keys() ?? []) ac.abort(new OutOfRotation(`worker ${w.id} out of rotation: ${why}`));
    this.pending.delete(w.id);
  }

  private forget(id: string): void {
    this.progressAt.delete(id);
    this.modelsAskedAt.delete(id);
    this.noLoadEndpoint.delete(id);
    this.pending.delete(id);
  }
}

/** The abort reason of an attempt whose worker left rotation while it waited. */
export class OutOfRotation extends Error {
  override name = 'OutOfRotation';
}

function errText(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  if (err?.name === 'TimeoutError') return 'probe timed out';
  return err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}

import type { RouterConfig, WorkerConfig } from './config.js';
import type { LoadAccounting } from './load.js';
import type { Candidate } from './policies/policy.js';
import type { StreamHealth } from './streams.js';
import { tokenizerKeyOf } from './tokenize-pool.js';
import { Health } from './health.js';
import { Membership, type SourceLifecycle, type WorkerEntry } from './membership.js';

export type { HealthState, WorkerEntry, ServedModel } from './membership.js';
export { sourceId } from './membership.js';

/** What /metrics and candidates read of the index. */
export interface IndexLike {
  stats(source: string): { blocks: number; nodes: number; provisionalBlocks: number };
}

export interface RegistryOptions {
  index: SourceLifecycle & IndexLike;
  load: LoadAccounting;
  health: RouterConfig['health'];
  /** A source left: policies forget it. */
  onSourceRemoved?: (source: string) => void;
  /** See MembershipOptions.eventsBind. */
  eventsBind?: string | null;
  log?: (msg: string) => void;
}

/**
 * The fleet as the pipeline sees it: membership (who is in the fleet, their event feeds and index
 * sources), health (who is in rotation) and load (what is in flight where), composed. Removing a
 * worker drops every map kept for it: index sources, load, health, policy state.
 */
export class Registry {
  readonly membership: Membership;
  readonly health: Health;

  constructor(private readonly opts: RegistryOptions) {
    this.membership = new Membership({ sources: opts.index, eventsBind: opts.eventsBind ?? null, ...(opts.log ? { log: opts.log } : {}) });
    this.health = new Health({ membership: this.membership, load: opts.load, health: opts.health, ...(opts.log ? { log: opts.log } : {}) });
    this.membership.onLeave((w) => {
      for (const s of w.sources) {
        opts.load.forget(s);
        opts.onSourceRemoved?.(s);
      }
    });
  }

  startProbing(): void {
    this.health.startProbing();
  }

  async add(cfg: WorkerConfig): Promise<WorkerEntry> {
    const w = await this.membership.add(cfg);
    void this.health.probe(w);
    return w;
  }

  remove(id: string): Promise<boolean> {
    return this.membership.remove(id);
  }

  get(id: string): WorkerEntry | undefined {
    return this.membership.get(id);
  }

  list(): WorkerEntry[] {
    return this.membership.list();
  }

  healthyCount(): number {
    let n = 0;
    for (const w of this.membership.list()) if (w.state === 'healthy') n++;
    return n;
  }

  /** Every (worker, rank) of every healthy worker, with its load, trust and cache occupancy. */
  candidates(): Candidate[] {
    const out: Candidate[] = [];
    for (const w of this.membership.list()) {
      if (w.state !== 'healthy' || w.draining) continue;
      const tk = tokenizerKeyOf(w.config.tokenizer);
      for (let i = 0; i < w.ranks.length; i++) {
        const r = w.ranks[i]!;
        const source = w.sources[i]!;
        const feed = w.streams.get(r);
        const c: Candidate = {
          workerId: w.id,
          rank: r,
          source,
          trusted: feed ? feed.trusted : false,
          blockSize: feed?.blockSize ?? w.config.block_size,
          tokenizerKey: tk,
          load: this.opts.load.effective(source),
          heldBlocks: this.opts.index.stats(source).blocks,
        };
        // Assigned, not spread in: an object literal with a spread is built on V8's slow path.
        if (w.config.tiers) c.tierRates = w.config.tiers;
        out.push(c);
      }
    }
    return out;
  }

  streamHealth(w: WorkerEntry, rank: number): StreamHealth | null {
    return w.streams.get(rank)?.health() ?? null;
  }

  trackPending(id: string, ac: AbortController, streaming = false): () => void {
    return this.health.trackPending(id, ac, streaming);
  }

  progress(id: string): void {
    this.health.progress(id);
  }

  checkStalls(now = Date.now()): void {
    this.health.checkStalls(now);
  }

  reportFailure(id: string, err: string): boolean {
    return this.health.reportFailure(id, err);
  }

  probeAll(): Promise<void> {
    return this.health.probeAll();
  }

  async close(): Promise<void> {
    this.health.stop();
    await this.membership.close();
  }
}

/**
 * Load accounting: the work this router has sent to each (worker, rank) source and not yet seen
 * finish, merged with what the worker itself reports on GET /load (other clients, other routers).
 * Policies read a `LoadView`; the pipeline records through `LoadAccounting`. `LocalLoad` is this
 * router's own accounting; a shared implementation (several replicas) sits behind the same interface.
 */
export interface WorkerLoad {
  /** Requests in flight. */
  inFlight: number;
  /** Uncached prompt tokens of those requests whose first byte has not arrived yet. */
  pendingPrefillTokens: number;
  /** Requests past their first byte (decoding). */
  activeDecodes: number;
  /** Which prompt blocks part of pendingPrefillTokens computes, where known (shared load: router/cluster/pending-blocks.ts). */
  pending?: PendingPrefill;
}

/** The keyed part of a source's pending prefill: how many pending prefills compute the block with this key. */
export interface PendingPrefill {
  /** Pending prefill tokens whose blocks are known (full blocks only); the rest of pendingPrefillTokens is unkeyed. */
  readonly keyedTokens: number;
  count(lo: number, hi: number): number;
}

/** What a worker reported on GET /load (our workers; engines without it report nothing). */
export interface ReportedLoad {
  running: number;
  waiting: number;
  pendingPrefillTokens: number;
  /** The worker's KV cache size in blocks, when it says (dashboard: cache fill). */
  numBlocks?: number;
  at: number;
}

export interface LoadTicket {
  /** First byte arrived: prefill is done, the request now decodes. Idempotent. */
  prefillDone(): void;
  /** Finished, failed or aborted. Idempotent. */
  finish(): void;
}

/** What a policy reads. */
export interface LoadView {
  /** This router's own count. */
  get(source: string): WorkerLoad;
  /** Own count plus the work the worker reports that this router did not send. */
  effective(source: string): WorkerLoad;
}

/** What the pipeline and the health probes write. */
export interface LoadAccounting extends LoadView {
  /** A request goes to `source` now (recorded synchronously: a concurrent burst sees it). */
  start(source: string, prefillTokens: number): LoadTicket;
  report(source: string, r: Omit<ReportedLoad, 'at'>): void;
  reportedOf(source: string): ReportedLoad | undefined;
  /** The source left: drop everything kept for it. */
  forget(source: string): void;
  /** Sources with state kept (tests: nothing outlives a removed worker). */
  sources(): string[];
}

const ZERO: WorkerLoad = Object.freeze({ inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 });

interface Report extends ReportedLoad {
  /** The router's own count when the report arrived: that part of the report is ours. */
  own: WorkerLoad;
}

/**
 * The worker's report is a snapshot that includes this router's requests. Only the part above
 * what the router itself had in flight then is foreign work; the router's own live count wins
 * for its requests, so a request it saw finish stops counting at once (not when the report ages out).
 */
export function mergeReported(own: WorkerLoad, rep: Report | undefined, now: number, maxAgeMs: number): WorkerLoad {
  if (!rep || now - rep.at > maxAgeMs) return own;
  const foreignInFlight = Math.max(0, rep.running + rep.waiting - rep.own.inFlight);
  const foreignDecodes = Math.max(0, rep.running - rep.own.activeDecodes);
  const foreignPrefill = Math.max(0, rep.pendingPrefillTokens - rep.own.pendingPrefillTokens);
  if (foreignInFlight === 0 && foreignDecodes === 0 && foreignPrefill === 0) return own;
  return {
    ...own,
    inFlight: own.inFlight + foreignInFlight,
    pendingPrefillTokens: own.pendingPrefillTokens + foreignPrefill,
    activeDecodes: own.activeDecodes + foreignDecodes,
  };
}

/** The workers' last /load reports, each with the router's own count when it arrived (local and shared accounting both keep them). */
export class WorkerReports {
  private readonly reports = new Map<string, Report>();

  record(source: string, r: Omit<ReportedLoad, 'at'>, own: WorkerLoad, at: number): void {
    this.reports.set(source, { ...r, at, own: { inFlight: own.inFlight, pendingPrefillTokens: own.pendingPrefillTokens, activeDecodes: own.activeDecodes } });
  }

  /** `own` raised by the foreign part of a fresh report (see mergeReported). */
  merge(source: string, own: WorkerLoad, now: number, maxAgeMs: number): WorkerLoad {
    return mergeReported(own, this.reports.get(source), now, maxAgeMs);
  }

  of(source: string): ReportedLoad | undefined {
    const r = this.reports.get(source);
    if (!r) return undefined;
    const { own: _own, ...rest } = r;
    return rest;
  }

  forget(source: string): void {
    this.reports.delete(source);
  }

  sources(): Iterable<string> {
    return this.reports.keys();
  }
}

export class LocalLoad implements LoadAccounting {
  private readonly loads = new Map<string, WorkerLoad>();
  private readonly reported = new WorkerReports();

  constructor(private readonly maxReportAgeMs = 5000) {}

  get(source: string): WorkerLoad {
    return this.loads.get(source) ?? ZERO;
  }

  effective(source: string): WorkerLoad {
    return this.reported.merge(source, this.get(source), Date.now(), this.maxReportAgeMs);
  }

  report(source: string, r: Omit<ReportedLoad, 'at'>): void {
    this.reported.record(source, r, this.get(source), Date.now());
  }

  reportedOf(source: string): ReportedLoad | undefined {
    return this.reported.of(source);
  }

  start(source: string, prefillTokens: number): LoadTicket {
    let l = this.loads.get(source);
    if (!l) this.loads.set(source, (l = { inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 }));
    const load = l;
    const tokens = Math.max(0, Math.round(prefillTokens));
    load.inFlight += 1;
    load.pendingPrefillTokens += tokens;
    let prefilling = true;
    let done = false;
    return {
      prefillDone: () => {
        if (!prefilling || done) return;
        prefilling = false;
        load.pendingPrefillTokens -= tokens;
        load.activeDecodes += 1;
      },
      finish: () => {
        if (done) return;
        done = true;
        if (prefilling) load.pendingPrefillTokens -= tokens;
        else load.activeDecodes -= 1;
        prefilling = false;
        load.inFlight -= 1;
      },
    };
  }

  forget(source: string): void {
    this.loads.delete(source);
    this.reported.forget(source);
  }

  sources(): string[] {
    return [...new Set([...this.loads.keys(), ...this.reported.sources()])];
  }
}

/** The former name (tests, benches). */

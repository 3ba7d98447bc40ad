/**
 * The router's own accounting of work it has sent to each worker and not yet seen finish:
 * prefill tokens still to compute (until the first response byte), and requests in flight
 * (decoding or about to). Optionally merged with what the worker itself reports on GET /load.
 */
export interface WorkerLoad {
  /** Requests sent by this router, not finished. */
  inFlight: number;
  /** Uncached prompt tokens of those requests whose first byte has not arrived yet. */
  pendingPrefillTokens: number;
  /** Requests past their first byte (decoding). */
  activeDecodes: number;
}

/** What a worker reported on GET /load (our workers; engines without it report nothing). */
export interface ReportedLoad {
  running: number;
  waiting: number;
  pendingPrefillTokens: number;
  at: number;
}

export interface LoadTicket {
  /** First byte arrived: prefill is done, the request now decodes. Idempotent. */
  prefillDone(): void;
  /** Finished, failed or aborted. Idempotent. */
  finish(): void;
}

export class LoadTracker {
  private readonly loads = new Map<string, WorkerLoad>();
  private readonly reported = new Map<string, ReportedLoad>();

  get(workerId: string): WorkerLoad {
    return this.loads.get(workerId) ?? { inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 };
  }

  /** The router's own numbers, raised to the worker's report when that is higher (other clients, other routers). */
  effective(workerId: string, maxReportAgeMs = 5000): WorkerLoad {
    const own = this.get(workerId);
    const rep = this.reported.get(workerId);
    if (!rep || Date.now() - rep.at > maxReportAgeMs) return own;
    return {
      inFlight: Math.max(own.inFlight, rep.running + rep.waiting),
      pendingPrefillTokens: Math.max(own.pendingPrefillTokens, rep.pendingPrefillTokens),
      activeDecodes: Math.max(own.activeDecodes, rep.running),
    };
  }

  report(workerId: string, r: Omit<ReportedLoad, 'at'>): void {
    this.reported.set(workerId, { ...r, at: Date.now() });
  }

  reportedOf(workerId: string): ReportedLoad | undefined {
    return this.reported.get(workerId);
  }

  start(workerId: string, prefillTokens: number): LoadTicket {
    const l = this.loads.get(workerId) ?? { inFlight: 0, pendingPrefillTokens: 0, activeDecodes: 0 };
    this.loads.set(workerId, l);
    const tokens = Math.max(0, Math.round(prefillTokens));
    l.inFlight += 1;
    l.pendingPrefillTokens += tokens;
    let prefilling = true;
    let done = false;
    return {
      prefillDone: () => {
        if (!prefilling || done) return;
        prefilling = false;
        l.pendingPrefillTokens -= tokens;
        l.activeDecodes += 1;
      },
      finish: () => {
        if (done) return;
        done = true;
        if (prefilling) l.pendingPrefillTokens -= tokens;
        else l.activeDecodes -= 1;
        prefilling = false;
        l.inFlight -= 1;
      },
    };
  }

  forget(workerId: string): void {
    this.loads.delete(workerId);
    this.reported.delete(workerId);
  }
}

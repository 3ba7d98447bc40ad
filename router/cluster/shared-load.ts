import { LocalLoad, WorkerReports, type LoadAccounting, type LoadTicket, type ReportedLoad, type WorkerLoad } from '../load.js';
import { RemoteShares } from './shares.js';

const add = (a: WorkerLoad, b: WorkerLoad): WorkerLoad => ({
  inFlight: a.inFlight + b.inFlight,
  pendingPrefillTokens: a.pendingPrefillTokens + b.pendingPrefillTokens,
  activeDecodes: a.activeDecodes + b.activeDecodes,
});

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
  onChange: (source: string) => void = () => {};

  constructor(replicaId: string, private readonly maxReportAgeMs = 5000, private readonly now: () => number = Date.now) {
    this.local = new LocalLoad(maxReportAgeMs);
    this.remote = new RemoteShares(replicaId);
  }

  get(source: string): WorkerLoad {
    return add(this.local.get(source), this.remote.loadOf(source, this.now()));
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
    this.onChange(source);
    let prefilled = false;
    let done = false;
    return {
      prefillDone: () => {
        if (prefilled || done) return;
        prefilled = true;
        t.prefillDone();
        this.onChange(source);
      },
      finish: () => {
        if (done) return;
        done = true;
        t.finish();
        this.onChange(source);
      },
    };
  }

  forget(source: string): void {
    this.local.forget(source);
    this.remote.forget(source);
    this.reported.forget(source);
  }

  sources(): string[] {
    return [...new Set([...this.local.sources(), ...this.reported.sources()])];
  }
}

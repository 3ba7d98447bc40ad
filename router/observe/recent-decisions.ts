/**
 * The last routing decisions, in memory, for the dashboard and /workers: what the router chose and
 * why, and what the worker then reported it had cached. Never holds prompt text or token ids.
 */
export interface CandidateRecord {
  worker: string;
  rank: number;
  matched_tokens: number;
  in_flight: number;
  queued_prefill_tokens: number;
  cost: number;
  /** The policy's cost terms, by name (e.g. uncached, queued, in_flight, predicted_ttft_ms). */
  terms: Record<string, number>;
}

export interface DecisionRecord {
  request_id: string;
  /** Date.now() when the request was committed to its first pick. */
  at_ms: number;
  policy: string;
  prompt_tokens: number;
  candidates: CandidateRecord[];
  pick: { worker: string; rank: number; predicted_cached_tokens: number } | null;
  /** null while in flight; then 'ok', 'error', 'aborted', 'retried', ... */
  outcome: string | null;
  /** usage.prompt_tokens_details.cached_tokens as the worker reported it; null until known. */
  actual_cached_tokens: number | null;
}

type Listener = (r: DecisionRecord) => void;

/** A bounded ring of DecisionRecords; a record is updated in place when its outcome arrives. */
export class RecentDecisions {
  private readonly ring: DecisionRecord[] = [];
  private readonly listeners = new Set<Listener>();

  constructor(readonly capacity = 100) {}

  add(r: DecisionRecord): DecisionRecord {
    this.ring.push(r);
    if (this.ring.length > this.capacity) this.ring.shift();
    this.emit(r);
    return r;
  }

  /** The record changed (outcome, actual cached tokens): tell the listeners again. */
  updated(r: DecisionRecord): void {
    this.emit(r);
  }

  /** Oldest first. */
  list(): readonly DecisionRecord[] {
    return this.ring;
  }

  /** Returns the unsubscribe function. */
  on(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  private emit(r: DecisionRecord): void {
    for (const l of this.listeners) l(r);
  }
}

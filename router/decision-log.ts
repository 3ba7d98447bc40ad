import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { Scored } from './policies/policy.js';

/** How the request ended, as the decision-log line reports it. */
export interface DecisionEnd {
  request_id: string;
  /** The worker (and rank) that answered, or null when none did. */
  pick: { source: string; predicted_cached_tokens: number } | null;
  /** ok, upstream_status, stream_error, aborted, no_worker. */
  outcome: string;
  attempts: number;
  /** usage.prompt_tokens_details.cached_tokens as the worker reported it; null when it did not. */
  actual_cached_tokens: number | null;
}

/**
 * `decision_log`: one JSON line per routed request, written when the request ends — every
 * candidate with its matched tokens, load and cost terms, best first, then the request id, the
 * pick, the outcome and the cached tokens the worker reported — to answer "why did it go there,
 * and was the prediction right?" after the fact.
 *
 * Never blocks routing and never grows without bound: while the file lags more than
 * `maxBufferedBytes` behind, lines are dropped and counted (`dropped`; `n` skips them, so a
 * reader sees where lines are missing).
 */
export class DecisionLog {
  private readonly out: Writable;
  private readonly maxBufferedBytes: number;
  private seq = 0;
  private droppedLines = 0;

  constructor(target: string | Writable, onError: (msg: string) => void, opts: { maxBufferedBytes?: number } = {}) {
    this.maxBufferedBytes = opts.maxBufferedBytes ?? 1024 * 1024;
    this.out = typeof target === 'string' ? createWriteStream(target, { flags: 'a' }) : target;
    const name = typeof target === 'string' ? target : 'stream';
    this.out.on('error', (e) => onError(`decision log ${name}: ${e.message}`));
  }

  /** Lines dropped because the output lagged more than `maxBufferedBytes` behind. */
  get dropped(): number {
    return this.droppedLines;
  }

  write(policy: string, ranked: Scored[], end?: DecisionEnd): void {
    const line = {
      n: this.seq++,
      t: Date.now(),
      ...(end ? { request_id: end.request_id } : {}),
      policy,
      prompt_tokens: ranked[0]?.promptTokens ?? 0,
      candidates: ranked.map((s) => ({
        source: s.candidate.source,
        matched: s.matchedTokens,
        in_flight: s.candidate.load.inFlight,
        pending_prefill: s.candidate.load.pendingPrefillTokens,
        terms: s.terms,
        cost: Math.round(s.cost),
      })),
      ...(end ? { pick: end.pick, outcome: end.outcome, attempts: end.attempts, actual_cached_tokens: end.actual_cached_tokens } : {}),
    };
    const text = JSON.stringify(line) + '\n';
    if (this.out.writableLength + Buffer.byteLength(text) > this.maxBufferedBytes) {
      this.droppedLines++;
      return;
    }
    this.out.write(text);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.out.end(resolve));
  }
}

import type { DecisionLog } from '../decision-log.js';
import type { RouterMetrics } from '../metrics.js';
import type { Scored } from '../policies/policy.js';
import type { AttemptFailure } from '../proxy.js';
import type { PredictionAccuracy } from './accuracy.js';
import type { DecisionRecord, RecentDecisions } from './recent-decisions.js';
import { usageTap, type UsageTap } from './usage.js';

export interface TraceDeps {
  metrics: RouterMetrics;
  decisionLog: DecisionLog | null;
  recentDecisions: RecentDecisions | null;
  accuracy: PredictionAccuracy | null;
  policy: string;
}

/**
 * What one request leaves behind for the operator, beside its response: timings, upstream errors,
 * the cached tokens the worker reported against the prediction, its RecentDecisions record and
 * its decision-log line (one line, written when the request ends). Attempts are sequential: one
 * is current at a time.
 */
export class RequestTrace {
  private readonly startedAt = performance.now();
  private readonly record: DecisionRecord | null;
  private attempts = 0;
  private current: { s: Scored; sentAt: number; tap: UsageTap | null; ok: boolean } | null = null;
  private finished = false;

  constructor(
    private readonly d: TraceDeps,
    readonly requestId: string,
    private readonly ranked: Scored[],
    /** Strip the usage the router asked for (the client did not). */
    private readonly stripUsage: boolean,
    private readonly salted: boolean,
  ) {
    this.record = d.recentDecisions?.add(decisionRecord(requestId, d.policy, ranked)) ?? null;
  }

  /** An attempt goes to `s` now (just before the send). */
  begin(s: Scored): void {
    this.attempts++;
    this.current = { s, sentAt: performance.now(), tap: null, ok: false };
    if (this.record) this.record.pick = pickOf(s);
  }

  failed(f: AttemptFailure): void {
    const c = this.current;
    if (c) this.d.metrics.upstreamErrors.inc({ worker: c.s.candidate.workerId, status: f.status !== undefined ? String(f.status) : f.reason });
    // Nothing answered from there: no pick unless a next attempt makes one.
    this.current = null;
    if (this.record) this.record.pick = null;
  }

  firstByte(status: number): void {
    const c = this.current;
    if (!c) return;
    const now = performance.now();
    const worker = c.s.candidate.workerId;
    const ttfb = (now - c.sentAt) / 1000;
    this.d.metrics.ttfbSeconds.observe({ worker }, ttfb);
    this.d.metrics.addedLatencySeconds.observe(Math.max(0, (now - this.startedAt) / 1000 - ttfb));
    c.ok = status >= 200 && status < 300;
    if (!c.ok) this.d.metrics.upstreamErrors.inc({ worker, status: String(status) });
  }

  /** The body filter for the current attempt's response (reads usage). */
  tap(sse: boolean, status: number): UsageTap | null {
    const c = this.current;
    if (!c) return null;
    c.tap = usageTap(sse, status, sse && this.stripUsage);
    return c.tap;
  }

  /** The current attempt ended once bytes flowed (or the client left before them). */
  ended(outcome: string): void {
    const c = this.current;
    if (!c) return this.finish(outcome);
    const worker = c.s.candidate.workerId;
    const m = this.d.metrics;
    m.upstreamSeconds.observe({ worker }, (performance.now() - c.sentAt) / 1000);
    if (outcome === 'stream_error') m.upstreamErrors.inc({ worker, status: 'stream_error' });
    const actual = c.tap?.cachedTokens ?? null;
    if (actual !== null && c.ok) {
      const predicted = c.s.matchedTokens;
      m.actualCachedTokens.inc({ worker }, actual);
      m.predictionErrorTokens.observe({ worker }, predicted - actual);
      this.d.accuracy?.record(worker, { predicted, actual, salted: this.salted });
    }
    this.finish(outcome, actual);
  }

  /** The request is over: the record and the decision-log line get their outcome. Once. */
  finish(outcome: string, actual: number | null = null): void {
    if (this.finished) return;
    this.finished = true;
    const s = this.current?.s ?? null;
    if (this.record) {
      this.record.outcome = outcome;
      this.record.actual_cached_tokens = actual;
      this.d.recentDecisions!.updated(this.record);
    }
    this.d.decisionLog?.write(this.d.policy, this.ranked, {
      request_id: this.requestId,
      pick: s ? { source: s.candidate.source, predicted_cached_tokens: s.matchedTokens } : null,
      outcome,
      attempts: this.attempts,
      actual_cached_tokens: actual,
    });
  }
}

function pickOf(s: Scored): DecisionRecord['pick'] {
  return { worker: s.candidate.workerId, rank: s.candidate.rank, predicted_cached_tokens: s.matchedTokens };
}

/** The record of a decision (no prompt text, no token ids). */
export function decisionRecord(requestId: string, policy: string, ranked: Scored[]): DecisionRecord {
  return {
    request_id: requestId,
    at_ms: Date.now(),
    policy,
    prompt_tokens: ranked[0]?.promptTokens ?? 0,
    candidates: ranked.map((s) => ({
      worker: s.candidate.workerId,
      rank: s.candidate.rank,
      matched_tokens: s.matchedTokens,
      in_flight: s.candidate.load.inFlight,
      queued_prefill_tokens: s.candidate.load.pendingPrefillTokens,
      cost: Math.round(s.cost),
      terms: s.terms,
    })),
    pick: null,
    outcome: null,
    actual_cached_tokens: null,
  };
}

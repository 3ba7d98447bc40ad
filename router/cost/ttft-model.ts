import type { WorkerLoad } from '../load.js';
import type { WorkerRates } from './rates.js';

/**
 * Predicted time to first token of one request on one candidate, in milliseconds, and the delay
 * sending it there adds to the requests already there. Pure: load and rates in, parts out.
 *
 *   wait_ms     prefill queued ahead of it (minus the part computing this prompt's provisional
 *               prefix: that work is shared, not extra), at the worker's prefill rate
 *   prefill_ms  its own uncached tokens at that rate
 *   running_ms  the requests decoding there share every step with its prefill
 *   queued_requests_ms  requests waiting there for a first token, per request (batch slots)
 *   predicted_ttft_ms = overhead + wait + prefill + running + queued_requests
 *   delay_to_others_ms = each request decoding there waits out this prefill too (steps are
 *               shared), weighted by delay_weight
 *   delay_to_waiting_ms = each request already there without its first token waits out this
 *               prefill too when the engine admits every waiting prefill into its next step (a
 *               token budget that holds them: the bench's sim by default; vLLM with a 2048-token
 *               budget admits in order, so a later arrival delays them little), weighted by waiting_weight
 *   delay_to_later_ms = each request that will queue behind it there waits out its prefill:
 *               `laterRequests` of them (the fleet's mean count of requests waiting for a first
 *               token per worker: by Little's law about how many arrive at a worker while one
 *               waits), weighted by later_weight. What makes a miss cost more than its own time:
 *               the fleet computes it, and everyone queued after it pays.
 *   cost_ms = predicted_ttft_ms + delay_to_others_ms + delay_to_waiting_ms + delay_to_later_ms (what the fleet pays)
 */
export interface TtftParts {
  predicted_ttft_ms: number;
  wait_ms: number;
  prefill_ms: number;
  running_ms: number;
  /** Requests waiting there for their first token, beyond their prefill tokens (scheduling, batch slots). */
  queued_requests_ms: number;
  overhead_ms: number;
  delay_to_others_ms: number;
  delay_to_waiting_ms: number;
  delay_to_later_ms: number;
  /** Prefill tokens counted as ahead of it (what the learner regresses on). */
  ahead_tokens: number;
  cost_ms: number;
}

export interface TtftInput {
  promptTokens: number;
  matchedTokens: number;
  /** Pending prefill that is computing this prompt's own (provisionally matched) prefix. */
  sharedPending: number;
  load: WorkerLoad;
  rates: WorkerRates;
  delayWeight: number;
  /** Requests expected to queue behind it (see delay_to_later_ms). */
  laterRequests: number;
  laterWeight: number;
  waitingWeight: number;
}

export function predictTtft(i: TtftInput): TtftParts {
  const uncached = Math.max(0, i.promptTokens - i.matchedTokens);
  const ahead = Math.max(0, i.load.pendingPrefillTokens - i.sharedPending);
  const r = i.rates;
  const wait = (ahead / 1000) * r.msPerKtokAhead;
  const prefill = (uncached / 1000) * r.msPerKtok;
  const running = i.load.activeDecodes * r.msPerRunning;
  const waiting = Math.max(0, i.load.inFlight - i.load.activeDecodes);
  const queued = waiting * r.msPerWaiting;
  const predicted = r.overheadMs + wait + prefill + running + queued;
  const delay = i.delayWeight * i.load.activeDecodes * prefill;
  const delayWaiting = i.waitingWeight * waiting * prefill;
  const later = i.laterWeight * i.laterRequests * prefill;
  return {
    predicted_ttft_ms: round(predicted),
    wait_ms: round(wait),
    prefill_ms: round(prefill),
    running_ms: round(running),
    queued_requests_ms: round(queued),
    overhead_ms: round(r.overheadMs),
    delay_to_others_ms: round(delay),
    delay_to_waiting_ms: round(delayWaiting),
    delay_to_later_ms: round(later),
    ahead_tokens: ahead,
    cost_ms: predicted + delay + delayWaiting + later,
  };
}

const round = (v: number) => Math.round(v * 100) / 100;

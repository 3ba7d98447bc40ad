import type { AttemptFailure } from './proxy.js';

/**
 * The router-wide retry budget: every request deposits `ratio` of a retry, time adds
 * `minPerSecond`, a retry spends one; the bucket holds at most max(minPerSecond, 1) spare
 * retries. So retries stay a bounded share of the traffic: a fault that fails every request
 * cannot multiply the load on the rest of the fleet by max_attempts.
 */
export class RetryBudget {
  private tokens: number;
  private at: number;
  private readonly cap: number;

  constructor(
    private readonly ratio: number,
    private readonly minPerSecond: number,
    now = Date.now(),
  ) {
    this.cap = Math.max(minPerSecond, 1);
    this.tokens = this.cap;
    this.at = now;
  }

  /** A request arrived. */
  deposit(now = Date.now()): void {
    this.refill(now);
    this.tokens = Math.min(this.cap, this.tokens + this.ratio);
  }

  /** One retry, if the budget allows it. */
  spend(now = Date.now()): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private refill(now: number): void {
    const dt = Math.max(0, now - this.at);
    this.at = now;
    this.tokens = Math.min(this.cap, this.tokens + (this.minPerSecond * dt) / 1000);
  }
}

/**
 * May a request whose attempt failed this way move to the next worker? Not when the attempt
 * timed out or ended with its worker out of rotation (taken out by it or meanwhile): the request
 * itself may be what breaks workers (a poisoned prompt), and retrying it would take the next one
 * down too. A refused connection never reached the worker, so it is always safe to move on.
 * Otherwise the router-wide budget decides.
 */
export function mayRetry(f: AttemptFailure, tookWorkerOut: boolean, budget: RetryBudget, now = Date.now()): boolean {
  if (f.reason === 'refused') return true;
  if (f.reason === 'timeout' || f.reason === 'out_of_rotation' || tookWorkerOut) return false;
  return budget.spend(now);
}

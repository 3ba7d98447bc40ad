import type { Candidate, Policy, RouteRequest, Scored } from './policy.js';
import { plainScore } from './policy.js';

/** Each request to the next candidate in turn (by source id, so the order is stable as workers come and go). */
export class RoundRobinPolicy implements Policy {
  readonly name = 'round_robin';
  private next = 0;

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    const sorted = [...candidates].sort((a, b) => (a.source < b.source ? -1 : a.source > b.source ? 1 : 0));
    const n = sorted.length;
    if (n === 0) return [];
    const start = this.next % n;
    this.next = (start + 1) % Number.MAX_SAFE_INTEGER;
    const out: Scored[] = [];
    for (let i = 0; i < n; i++) {
      const c = sorted[(start + i) % n]!;
      out.push(plainScore(c, req.tokensFor(c).length, i, { position: i }));
    }
    return out;
  }
}

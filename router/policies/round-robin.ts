import type { Candidate, Policy, RouteRequest, Scored } from './policy.js';
import { plainScore } from './policy.js';

/**
 * Each request to the next candidate in turn, by source id (a stable order as workers come and
 * go): the turn starts after the source last committed to. Ranking alone does not advance it.
 */
export class RoundRobinPolicy implements Policy {
  readonly name = 'round_robin';
  private last: string | null = null;

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    const sorted = [...candidates].sort((a, b) => (a.source < b.source ? -1 : a.source > b.source ? 1 : 0));
    const n = sorted.length;
    if (n === 0) return [];
    const after = this.last === null ? -1 : sorted.findIndex((c) => c.source > this.last!);
    const start = after === -1 ? 0 : after;
    const out: Scored[] = [];
    for (let i = 0; i < n; i++) {
      const c = sorted[(start + i) % n]!;
      out.push(plainScore(c, req.tokensFor(c).length, i, { position: i }));
    }
    return out;
  }

  commit(_req: RouteRequest, pick: Candidate): void {
    this.last = pick.source;
  }
}

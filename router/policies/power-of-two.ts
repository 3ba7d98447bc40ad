import type { Candidate, Policy, RouteRequest, Scored } from './policy.js';
import { plainScore } from './policy.js';

/**
 * Power of two choices, as SGLang Model Gateway's `power_of_two` (model_gateway/src/policies/
 * power_of_two.rs, PowerOfTwoPolicy::select_worker): two distinct candidates drawn at random, the one
 * with fewer requests in flight wins, a tie goes to the first drawn (`load1 <= load2`). SMG compares
 * reported token loads when it has them for both and falls back to request counts; the router's
 * in-flight count is that request count. The rest of the list (retries): the loser, then the others
 * by fewest in flight (source order on ties).
 */
export class PowerOfTwoPolicy implements Policy {
  readonly name = 'power_of_two';
  constructor(private readonly rnd: () => number = Math.random) {}

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    // A stable order first, so the same draws pick the same candidates whatever order the registry lists them in.
    const sorted = [...candidates].sort((a, b) => (a.source < b.source ? -1 : a.source > b.source ? 1 : 0));
    const n = sorted.length;
    if (n === 0) return [];
    const order: Candidate[] = [];
    if (n === 1) order.push(sorted[0]!);
    else {
      const i = Math.min(n - 1, Math.floor(this.rnd() * n));
      // The second draw from the other n - 1, so the two always differ.
      const j = (i + 1 + Math.min(n - 2, Math.floor(this.rnd() * (n - 1)))) % n;
      const [a, b] = [sorted[i]!, sorted[j]!];
      order.push(...(a.load.inFlight <= b.load.inFlight ? [a, b] : [b, a]));
      for (const c of sorted) if (c !== a && c !== b) order.push(c);
      const rest = order.splice(2).sort((x, y) => x.load.inFlight - y.load.inFlight);
      order.push(...rest);
    }
    return order.map((c, k) => plainScore(c, req.tokensFor(c).length, k, { position: k, sampled: k < 2 ? 1 : 0, in_flight: c.load.inFlight }));
  }
}

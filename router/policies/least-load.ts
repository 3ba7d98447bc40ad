import type { Candidate, CostWeights, Policy, RouteRequest, Scored } from './policy.js';
import { costTerms, sortByCost } from './policy.js';

/** The cache-aware cost with every match taken as zero: only queued prefill and in-flight requests count. */
export class LeastLoadPolicy implements Policy {
  readonly name = 'least_load';
  constructor(private readonly w: CostWeights, private readonly rnd: () => number = Math.random) {}

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    const scored = candidates.map((c): Scored => {
      const promptTokens = req.tokensFor(c).length;
      const { terms, cost } = costTerms(this.w, promptTokens, 0, c.load);
      // The prompt's own prefill is the same everywhere: leave it out so ties are exact.
      const t = { queued_prefill: terms.queued_prefill!, decode: terms.decode! };
      return { candidate: c, matchedTokens: 0, indexMatchedTokens: 0, promptTokens, terms: t, cost: cost - terms.prefill! };
    });
    return sortByCost(scored, this.w.tie_tolerance, this.rnd);
  }
}

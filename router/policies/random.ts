import type { Candidate, Policy, RouteRequest, Scored } from './policy.js';
import { plainScore } from './policy.js';

/** Uniformly at random (the rest of the list, for retries, is a random order too). */
export class RandomPolicy implements Policy {
  readonly name = 'random';
  constructor(private readonly rnd: () => number = Math.random) {}

  rank(req: RouteRequest, candidates: Candidate[]): Scored[] {
    return candidates
      .map((c) => ({ c, r: this.rnd() }))
      .sort((a, b) => a.r - b.r)
      .map(({ c }, i) => plainScore(c, req.tokensFor(c).length, i, { position: i }));
  }
}

import type { RouterConfig } from '../config.js';
import type { Policy } from './policy.js';
import type { MatchIndex } from './match-index.js';
import { CacheAwarePolicy } from './cache-aware.js';
import { RoundRobinPolicy } from './round-robin.js';
import { RandomPolicy } from './random.js';
import { LeastLoadPolicy } from './least-load.js';
import { ApproxTreePolicy } from './approx-tree.js';
import { PowerOfTwoPolicy } from './power-of-two.js';
import { PrefixHashPolicy } from './prefix-hash.js';

export type { Policy, Candidate, RouteRequest, Scored, CostWeights } from './policy.js';

/** `rnd` only for tests (deterministic tie breaks). */
export function createPolicy(cfg: Pick<RouterConfig, 'policy' | 'cache_aware' | 'approx_tree' | 'prefix_hash'>, index: MatchIndex, rnd: () => number = Math.random): Policy {
  switch (cfg.policy) {
    case 'cache_aware':
      return new CacheAwarePolicy(index, cfg.cache_aware, rnd);
    case 'round_robin':
      return new RoundRobinPolicy();
    case 'random':
      return new RandomPolicy(rnd);
    case 'least_load':
      return new LeastLoadPolicy(cfg.cache_aware, rnd);
    case 'approx_tree':
      return new ApproxTreePolicy(cfg.cache_aware, cfg.approx_tree, rnd);
    case 'power_of_two':
      return new PowerOfTwoPolicy(rnd);
    case 'prefix_hash':
      return new PrefixHashPolicy(cfg.prefix_hash);
  }
}

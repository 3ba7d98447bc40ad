/** Messages between the bench and its publisher-host children (over the fork IPC channel). */
import type { CacheShape } from './cache-sim.js';

export interface HostWorker {
  id: string;
  /** Distinct per worker across the fleet (seeds its ranks' hashes and tokens). */
  index: number;
  /** Rank 0's PUB and replay endpoints (rank r: the engines' offset, `_dp{r}` for ipc://). */
  endpoint: string;
  replayEndpoint: string;
}

export type ToHost =
  | { type: 'start'; workers: HostWorker[]; ranks: number; topic: string; shape: CacheShape }
  /** Store until every rank holds shape.capacity blocks, at most `blocksPerS` blocks/s for this host. */
  | { type: 'fill'; blocksPerS: number; blocksPerBatch: number }
  /** Steady state: every rank stores (and, full, evicts) `blocksPerS` blocks/s, one batch per engine step. */
  | { type: 'steady'; blocksPerS: number; stepMs: number }
  | { type: 'stats' }
  | { type: 'stop' };

export interface HostStats {
  batches: number;
  blockEvents: number;
  /** Batches refused by a full publisher queue (each a gap the router must replay). */
  dropped: number;
  heldBlocks: number;
}

export type FromHost =
  | { type: 'ready'; httpPort: number; pid: number }
  | { type: 'filled'; stats: HostStats }
  | { type: 'stats'; stats: HostStats }
  | { type: 'error'; message: string };

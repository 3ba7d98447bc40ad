import type { StreamHealth } from '../streams.js';

/** Why a (worker, rank)'s cache scores count or not, in words for the fleet table. Pure. */
export function trustReason(s: StreamHealth | null): string {
  if (s === null) return 'no event stream configured: routed by load only';
  if (s.silent !== null) return s.silent;
  if (s.trusted) return 'in sync';
  if (!s.connected) return 'not connected to the publisher';
  if (s.batches === 0) return 'no event batch received yet';
  if (s.gaps + s.resets + s.historyMissing > 0) return 'resyncing after a gap or reset';
  return 'waiting for the replay of missed batches';
}

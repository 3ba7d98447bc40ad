import type { Registry } from '../registry.js';
import type { Evidence } from './accuracy.js';
import type { TokenParity } from './parity.js';

/** What the router knows of a worker that can explain missed predictions (null: not in the fleet). */
export function evidenceOf(registry: Registry, parity: TokenParity, id: string): Evidence | null {
  const w = registry.get(id);
  if (!w) return null;
  return {
    streams: w.ranks.map((r) => {
      const h = w.streams.get(r)?.health();
      return { source: `${w.id}:${r}`, trusted: h?.trusted ?? false, silent: h?.silent ?? null };
    }),
    configuredBlockSize: w.config.block_size,
    eventBlockSizes: w.ranks.map((r) => w.streams.get(r)?.blockSize ?? null),
    parityMismatch: parity.statusOf(id)?.mismatch ?? null,
  };
}

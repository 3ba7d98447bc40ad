import type { KVEventBatch } from '../../src/events/types.js';
import type { SourceLifecycle } from '../membership.js';
import type { IndexLike } from '../registry.js';

/**
 * Tokenization parity: the router's token ids for a routed prompt against the token_ids of the
 * BlockStored events the chosen worker then publishes for it. A different tokenizer or chat
 * template shows as a first differing position; the prediction accuracy warning names it.
 *
 * Which events are the prompt's: a watch is set only on a prompt the router predicts cold on that
 * worker (nothing matched, so its first block starts a chain: parent_block_hash null) and only
 * when no other request is in flight there; another request committed to the source before the
 * events arrive voids the watch. One watch per source at a time, its tokens capped, expiring
 * after WATCH_TTL_MS: memory and work stay bounded whatever the traffic.
 */

export const WATCH_TOKENS = 256;
export const WATCH_TTL_MS = 15_000;

/** The first position where the two differ over their common length; -1 when they agree. */
export function firstDifference(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return -1;
}

export interface ParityResult {
  worker: string;
  source: string;
  /** -1: they agree. */
  position: number;
  routerToken: number | null;
  workerToken: number | null;
}

interface Watch {
  worker: string;
  tokens: number[];
  deadline: number;
  /** Decodes token ids for the message (the tokenizer the router used for this worker). */
  decode: (ids: number[]) => Promise<string>;
}

export interface ParityStatus {
  checked: number;
  mismatches: number;
  /** The last check's mismatch, null when it agreed (or none yet). */
  mismatch: string | null;
}

export class TokenParity {
  private readonly watches = new Map<string, Watch>();
  private readonly status = new Map<string, ParityStatus>();

  constructor(
    private readonly log: (msg: string) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * A request was committed to `source`. `cold`: the router predicted nothing cached there and
   * nothing else was in flight, so the worker's next chain-starting BlockStored is this prompt's.
   */
  committed(source: string, worker: string, tokens: readonly number[], blockSize: number, cold: boolean, decode: Watch['decode']): void {
    const now = this.now();
    const w = this.watches.get(source);
    if (w && w.deadline > now) {
      this.watches.delete(source); // ambiguous now: two prompts in flight
      return;
    }
    if (!cold || tokens.length < blockSize) {
      this.watches.delete(source);
      return;
    }
    this.watches.set(source, { worker, tokens: tokens.slice(0, WATCH_TOKENS), deadline: now + WATCH_TTL_MS, decode });
  }

  /** Every applied batch passes here (see tapBatches). */
  onBatch(source: string, batch: KVEventBatch): void {
    const w = this.watches.get(source);
    if (!w) return;
    if (w.deadline <= this.now()) {
      this.watches.delete(source);
      return;
    }
    for (const ev of batch.events) {
      if (ev.type !== 'BlockStored' || ev.parent_block_hash !== null || ev.token_ids.length === 0) continue;
      this.watches.delete(source);
      const pos = firstDifference(w.tokens, ev.token_ids);
      this.report(
        { worker: w.worker, source, position: pos, routerToken: pos < 0 ? null : w.tokens[pos]!, workerToken: pos < 0 ? null : ev.token_ids[pos]! },
        w.decode,
      );
      return;
    }
  }

  statusOf(worker: string): ParityStatus | null {
    return this.status.get(worker) ?? null;
  }

  forget(worker: string): void {
    this.status.delete(worker);
    for (const [s, w] of this.watches) if (w.worker === worker) this.watches.delete(s);
  }

  private report(r: ParityResult, decode: Watch['decode']): void {
    const st = this.status.get(r.worker) ?? { checked: 0, mismatches: 0, mismatch: null };
    this.status.set(r.worker, st);
    st.checked++;
    if (r.position < 0) {
      st.mismatch = null;
      return;
    }
    st.mismatches++;
    const ids = [r.routerToken!, r.workerToken!];
    void Promise.all(ids.map((id) => decode([id]).catch(() => '?'))).then(([a, b]) => {
      st.mismatch = mismatchText(r, a!, b!);
      this.log(`worker ${r.worker}: tokenization parity: ${st.mismatch}`);
    });
    st.mismatch = mismatchText(r, '?', '?');
  }
}

export function mismatchText(r: ParityResult, routerText: string, workerText: string): string {
  return (
    `the router's token ids differ from those in ${r.source}'s BlockStored events at position ${r.position}: ` +
    `router ${r.routerToken} ${JSON.stringify(routerText)}, worker ${r.workerToken} ${JSON.stringify(workerText)} ` +
    `(configure the router with the worker's tokenizer and chat template)`
  );
}

/** The index, with every applied batch shown to `onBatch` first (the seam the parity check reads). */
export function tapBatches<T extends SourceLifecycle & IndexLike>(index: T, onBatch: (source: string, batch: KVEventBatch) => void): SourceLifecycle & IndexLike {
  return {
    addSource: (s) => index.addSource(s),
    removeSource: (s) => index.removeSource(s),
    clearSource: (s) => index.clearSource(s),
    stats: (s) => index.stats(s),
    applyBatch: (s, b) => {
      try {
        onBatch(s, b);
      } finally {
        index.applyBatch(s, b);
      }
    },
  };
}

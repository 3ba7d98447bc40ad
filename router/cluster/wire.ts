/**
 * What the cluster link sends and applies, without NATS (pure: tests drive replicas with it
 * directly). Provisional messages name the prompt by its block keys; load messages state the
 * sender's totals and which of its pending prefills are keyed.
 */
import { PromptKeys, promptKeysOf } from '../../src/index/prefix-index.js';
import type { MatchIndex } from '../policies/match-index.js';
import type { SharedLoad } from './shared-load.js';
import { encodeKeys, toTotals, type LoadMessage, type ParsedProvisional, type ProvisionalMessage, type Totals } from './messages.js';

/**
 * A request was just started on `source` (load.start in the same turn): its provisional message,
 * keyed by the prompt's block keys (the ones rank and commit hashed: memoized per token array),
 * saying which blocks its pending prefill computes. null when the prompt has no full block.
 */
export function provisionalMessage(replica: string, load: SharedLoad, source: string, tokens: number[], blockSize: number, lora: string | null, salt: string | null): ProvisionalMessage | null {
  const n = Math.floor(tokens.length / blockSize);
  if (n === 0) return null;
  const keys = promptKeysOf(tokens, blockSize, lora, salt).keys(blockSize, n);
  const pending = load.keyLast(source, keys, blockSize, tokens.length);
  return { v: 2, r: replica, s: source, bs: blockSize, lora, salt, k: encodeKeys(keys, n), ...(pending ? { i: pending.id, f: pending.from } : {}) };
}

/** Another replica's provisional message: its prompt marked provisional at the source, its keyed pending prefill counted there. */
export function applyProvisional(m: ParsedProvisional, index: Pick<MatchIndex, 'markProvisional'>, load: SharedLoad): void {
  if (m.tokens) {
    index.markProvisional(m.s, m.tokens, m.bs, m.lora, m.salt);
    return;
  }
  const keys = m.keys!;
  const n = keys.length / 2;
  if (n === 0) return;
  index.markProvisional(m.s, keysOnly(keys, m.bs, m.lora, m.salt));
  if (m.pending) load.remote.addPending(m.r, m.pending.id, { source: m.s, keys, from: m.pending.from, to: n, blockSize: m.bs });
}

/** A load message: totals of `sources` ('h': every busy one) and the keyed pending ids there. */
export function loadMessage(replica: string, seq: number, ttl: number, k: 'd' | 'h', load: SharedLoad, sources: Iterable<string>): LoadMessage {
  const s: Record<string, Totals> = {};
  let p: Record<string, number[]> | null = null;
  for (const src of sources) {
    const t = toTotals(load.local.get(src));
    if (k === 'h' && t[0] === 0 && t[1] === 0 && t[2] === 0) continue;
    s[src] = t;
    const ids = load.ownPendingIds(src);
    if (ids.length > 0) (p ??= {})[src] = ids;
  }
  return { r: replica, q: seq, ttl, k, s, ...(p ? { p } : {}) };
}

/**
 * A PromptKeys that holds only the received keys of one block size (no token ids: the index marks
 * by keys, never rehashing them). A source the receiving index knows at another block size (or a
 * hybrid group of another) gets no usable marks from it: its walk would hash absent tokens, and
 * those keys match nothing.
 */
function keysOnly(keys: Uint32Array, blockSize: number, lora: string | null, salt: string | null): PromptKeys {
  const n = keys.length / 2;
  return new PromptKeys({ length: n * blockSize }, blockSize, lora, salt, new Map([[blockSize, { keys, done: n }]]));
}

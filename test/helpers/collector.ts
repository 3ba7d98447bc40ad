/** Collects what a KVEventSubscriber hands its consumer, for assertions. */
import type { StreamItem, StreamNotice } from '../../src/events/subscriber.js';
import { waitFor } from './net.js';

export class Collector {
  readonly items: StreamItem[] = [];
  readonly onItem = (item: StreamItem): void => {
    this.items.push(item);
  };

  /** Seqs of the batches handed over, in order (after the last reset when sinceReset). */
  seqs(sinceReset = false): bigint[] {
    let items = this.items;
    if (sinceReset) {
      let i = items.length - 1;
      while (i >= 0 && !(items[i]!.kind === 'notice' && (items[i] as { notice: StreamNotice }).notice.notice === 'reset')) i--;
      items = items.slice(i + 1);
    }
    return items.flatMap((x) => (x.kind === 'batch' ? [x.seq] : []));
  }

  notices(): StreamNotice[] {
    return this.items.flatMap((x) => (x.kind === 'notice' ? [x.notice] : []));
  }

  noticeKinds(): string[] {
    return this.notices().map((n) => (n.notice === 'history_missing' ? `history_missing:${n.reason}` : n.notice));
  }

  replayedSeqs(): bigint[] {
    return this.items.flatMap((x) => (x.kind === 'batch' && x.replayed ? [x.seq] : []));
  }

  async waitForSeq(seq: bigint, timeoutMs = 5000): Promise<void> {
    await waitFor(() => this.seqs().includes(seq), `seq ${seq}`, timeoutMs);
  }

  async waitForNotice(kind: string, timeoutMs = 5000): Promise<void> {
    await waitFor(() => this.noticeKinds().includes(kind), `notice ${kind}`, timeoutMs);
  }
}

/** [from, from+1, …, to] as bigints. */
export function range(from: number, to: number): bigint[] {
  return Array.from({ length: to - from + 1 }, (_, i) => BigInt(from + i));
}

/**
 * Checks that what the consumer got accounts for seqs 0..sent-1 of one publisher run:
 * batches strictly in order, every hole announced by a history_missing notice
 * [from, resumedAt). Starts after the last reset when sinceReset. Returns the holes.
 */
export function assertAccounted(items: StreamItem[], sent: number, opts: { sinceReset?: boolean; from?: bigint } = {}): Array<[bigint, bigint]> {
  let start = 0;
  if (opts.sinceReset) {
    for (let i = items.length - 1; i >= 0; i--) {
      const x = items[i]!;
      if (x.kind === 'notice' && x.notice.notice === 'reset') {
        start = i + 1;
        break;
      }
    }
  }
  let expected = opts.from ?? 0n;
  const holes: Array<[bigint, bigint]> = [];
  for (const x of items.slice(start)) {
    if (x.kind === 'batch') {
      if (x.seq !== expected) throw new Error(`expected seq ${expected}, got ${x.seq} (unannounced hole or disorder)`);
      expected++;
    } else if (x.kind === 'snapshot') {
      throw new Error('unexpected snapshot');
    } else if (x.notice.notice === 'history_missing') {
      if (x.notice.from !== expected) throw new Error(`history_missing from ${x.notice.from}, but next expected was ${expected}`);
      if (x.notice.resumedAt === null) throw new Error('history_missing without a resume point');
      holes.push([x.notice.from, x.notice.resumedAt]);
      expected = x.notice.resumedAt;
    } else if (x.notice.notice === 'reset') {
      throw new Error('unexpected reset');
    }
  }
  if (expected !== BigInt(sent)) throw new Error(`stream ended at ${expected}, publisher sent ${sent}`);
  return holes;
}

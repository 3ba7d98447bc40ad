/**
 * The router's event pipeline in this process: router/streams.ts's StreamFeed (one
 * KVEventSubscriber per (worker, rank)) feeding a PrefixIndex, exactly as the router wires
 * them, plus figures written for bench/faults.bench.ts.
 */
import { appendFileSync } from 'node:fs';
import { PrefixIndex } from '../../src/index/index.js';
import type { StreamItem } from '../../src/events/subscriber.js';
import { StreamFeed, type StreamFeedOptions } from '../../router/streams.js';
import { exact, settle, type RouterView, type SourceCheck } from './invariant.js';

export class Pipeline {
  readonly index = new PrefixIndex();
  readonly feed: StreamFeed;
  readonly log: string[] = [];

  constructor(
    readonly source: string,
    endpoint: string,
    replayEndpoint: string | null,
    topic: string,
    opts: StreamFeedOptions = {},
  ) {
    this.index.addSource(source);
    this.feed = new StreamFeed(source, endpoint, replayEndpoint, topic, this.index, (m) => this.log.push(m), null, opts);
  }

  static async start(source: string, endpoint: string, replayEndpoint: string | null, topic = 'kv', opts: StreamFeedOptions = {}): Promise<Pipeline> {
    const p = new Pipeline(source, endpoint, replayEndpoint, topic, opts);
    await p.feed.start();
    return p;
  }

  view = (): RouterView => ({ trusted: this.feed.health().trusted, dump: this.index.dump(this.source) });

  close(): Promise<void> {
    return this.feed.close();
  }
}

/** Records one figure (when FAULT_FIGURES names a file): bench/faults.bench.ts sums them up. */
export function figure(rec: { kind: 'fault'; fault: string; divergent: number; recoverMs: number | null; outcome: string } | { kind: 'load'; sent: number; answered: number; errors: number; rssBeforeMb: number; rssAfterMb: number }): void {
  const file = process.env.FAULT_FIGURES;
  if (file) appendFileSync(file, JSON.stringify(rec) + '\n');
}

export type { StreamItem };

/**
 * Settles `check` to `want` and records the fault's figure (unless `fault` is null): divergent
 * blocks of a trusted tree after settling, and the time from t0 to an exact tree. A check that
 * never settles is recorded too (with its last divergence), then the error is thrown.
 */
export async function settleFault(fault: string | null, check: () => Promise<SourceCheck>, t0: number, want: (c: SourceCheck) => boolean = exact): Promise<SourceCheck> {
  try {
    const { check: c } = await settle(check, { want, timeoutMs: 30_000 });
    if (fault !== null) figure({ kind: 'fault', fault, divergent: c.trusted ? c.divergent : 0, recoverMs: c.trusted ? Date.now() - t0 : null, outcome: c.trusted ? 'exact' : 'untrusted' });
    return c;
  } catch (err) {
    const last = (err as { check?: SourceCheck | null }).check;
    if (fault !== null) figure({ kind: 'fault', fault, divergent: last?.divergent ?? -1, recoverMs: null, outcome: 'NOT SETTLED' });
    throw err;
  }
}

/**
 * The router's event pipeline in this process: router/streams.ts's StreamFeed (one
 * KVEventSubscriber per (worker, rank)) feeding a PrefixIndex, exactly as the router wires
 * them, plus figures written for bench/faults.bench.ts.
 */
import { appendFileSync } from 'node:fs';
import { PrefixIndex } from '../../src/index/index.js';
import type { StreamItem } from '../../src/events/subscriber.js';
import { StreamFeed } from '../../router/streams.js';
import type { RouterView } from './invariant.js';

export class Pipeline {
  readonly index = new PrefixIndex();
  readonly feed: StreamFeed;
  readonly log: string[] = [];

  constructor(
    readonly source: string,
    endpoint: string,
    replayEndpoint: string | null,
    topic: string,
  ) {
    this.feed = new StreamFeed(source, endpoint, replayEndpoint, topic, this.index, (m) => this.log.push(m));
  }

  static async start(source: string, endpoint: string, replayEndpoint: string | null, topic = 'kv'): Promise<Pipeline> {
    const p = new Pipeline(source, endpoint, replayEndpoint, topic);
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

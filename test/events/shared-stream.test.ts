/**
 * Connect mode: the router binds one SUB (per rank), real publishers connect to it, each with its
 * own topic; seq tracking, gap replay (from each worker's own replay endpoint) and restart
 * detection stay per (topic, rank).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { SharedStreams, StreamFeed } from '../../router/streams.js';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { batchOf } from '../helpers/events.js';
import { freePort, waitFor } from '../helpers/net.js';

const closers: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

class Sink {
  readonly applied = new Map<string, number[]>();
  readonly clears: string[] = [];
  applyBatch(source: string, b: KVEventBatch): void {
    const ev = b.events[0];
    const list = this.applied.get(source) ?? [];
    list.push(ev && ev.type === 'BlockStored' ? Number(((ev.block_hashes[0] as bigint) - 0x9000000000000000n) / 1000n) : -1);
    this.applied.set(source, list);
  }
  clearSource(source: string): void {
    this.clears.push(source);
    this.applied.set(source, []);
  }
}

async function worker(routerPort: number, topic: string, replay = 'tcp://127.0.0.1:0'): Promise<KVEventPublisher> {
  // A named host: the PUB connects (to the router); the replay socket binds, as the engines do.
  const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: `tcp://127.0.0.1:${routerPort}`, replay_endpoint: replay, topic }) });
  closers.push(() => p.close(100));
  return p;
}

/** batchOf(i) carries block hash i: what each source applied, in order. */
const hashes = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

describe('router binds, publishers connect', { timeout: 30_000 }, () => {
  test('two workers on one bound SUB: told apart by topic, late join replayed from each own endpoint, restart per topic', async () => {
    const port = await freePort();
    const shared = new SharedStreams(`tcp://127.0.0.1:${port}`);
    closers.push(() => shared.close());
    const sink = new Sink();
    const a = await worker(port, 'w-a');
    const b = await worker(port, 'w-b');
    // Published before the router is up: lost on the live stream (no peer), there in each replay buffer.
    for (let i = 0; i < 5; i++) a.publish(batchOf(i));
    for (let i = 100; i < 103; i++) b.publish(batchOf(i));
    await Promise.all([a.flush(), b.flush()]);
    const sock = await shared.forRank(0);
    const fa = new StreamFeed('a/0', `tcp://127.0.0.1:${port}`, connectAddressFor(a.replayEndpoint!), 'w-a', sink, () => {}, null, { shared: sock });
    const fb = new StreamFeed('b/0', `tcp://127.0.0.1:${port}`, connectAddressFor(b.replayEndpoint!), 'w-b', sink, () => {}, null, { shared: sock });
    await fa.start();
    await fb.start();
    closers.push(() => fa.close(), () => fb.close());
    await waitFor(() => sock.peers >= 2, 'both publishers connected');
    // Live batches until each feed has caught up through its own replay endpoint.
    let ia = 5;
    let ib = 103;
    await waitFor(() => {
      a.publish(batchOf(ia++));
      b.publish(batchOf(ib++));
      return (sink.applied.get('a/0')?.length ?? 0) >= 8 && (sink.applied.get('b/0')?.length ?? 0) >= 6;
    }, 'both feeds caught up');
    await waitFor(() => sink.applied.get('a/0')!.length === ia && sink.applied.get('b/0')!.length === ib - 100, 'every batch applied');
    assert.deepEqual(sink.applied.get('a/0'), hashes(ia));
    assert.deepEqual(sink.applied.get('b/0'), hashes(ib - 100, 100));
    const ha = fa.health();
    assert.equal(ha.trusted, true);
    assert.equal(ha.lastSeq, String(ia - 1));
    assert.ok(ha.replays + ha.probeFinds >= 1, `a late join replayed from a's own replay endpoint: ${JSON.stringify(ha)}`);
    assert.ok(fb.health().replays + fb.health().probeFinds >= 1, 'and b from its own');
    assert.equal(sock.unknownTopic, 0);

    // Worker b restarts (seq back to 0) on its own replay endpoint, as an engine does: only b's tree is cleared.
    const bReplay = b.replayEndpoint!;
    await b.close(100);
    const b2 = await worker(port, 'w-b', bReplay);
    const before = sink.clears.length;
    let i2 = 500;
    await waitFor(() => (b2.publish(batchOf(i2++)), sink.clears.length > before && (sink.applied.get('b/0')?.length ?? 0) > 0), 'b restart seen');
    // b's tree may be cleared more than once (the restart, then a slow-joiner gap that its replay
    // cannot fill yet): never a's.
    assert.ok(sink.clears.slice(before).length >= 1 && sink.clears.slice(before).every((s) => s === 'b/0'), JSON.stringify(sink.clears.slice(before)));
    assert.equal(fb.health().resets, 1);
    assert.equal(fa.health().resets, 0);
    a.publish(batchOf(ia++));
    await waitFor(() => sink.applied.get('a/0')!.length === ia, 'a goes on');
    assert.deepEqual(sink.applied.get('a/0'), hashes(ia));
  });
});

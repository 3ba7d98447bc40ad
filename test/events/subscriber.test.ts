import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { encodeSeq } from '../../src/events/frames.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { KVEventSubscriber } from '../../src/events/subscriber.js';
import { Collector, range } from '../helpers/collector.js';
import { batchOf } from '../helpers/events.js';
import { freePort, removeIpcEndpoints, sleep, tmpIpc, waitFor } from '../helpers/net.js';
import { rig, type Rig } from '../helpers/stream.js';

const rigs: Rig[] = [];
async function open(opts: Parameters<typeof rig>[0] = {}): Promise<Rig> {
  const r = await rig(opts);
  rigs.push(r);
  return r;
}
after(async () => {
  await Promise.all(rigs.map((r) => r.close()));
  removeIpcEndpoints();
});

describe('subscriber', { timeout: 30_000 }, () => {
  test('applies batches in order; health reflects the stream', async () => {
    const { pub, sub, got } = await open({ config: { topic: 'kv-events' }, publisher: { dpRank: 2 } });
    for (let i = 0; i < 50; i++) pub.publish(batchOf(i));
    await got.waitForSeq(49n);
    assert.deepEqual(got.seqs(), range(0, 49));
    assert.deepEqual(got.notices(), []);
    const first = got.items[0]!;
    assert.ok(first.kind === 'batch' && first.topic === 'kv-events' && first.batch.dp_rank === 2 && !first.replayed);
    assert.deepEqual(first.kind === 'batch' && first.batch.events, batchOf(0));
    const h = sub.health();
    assert.equal(h.trusted, true);
    assert.equal(h.lastSeq, 49n);
    assert.equal(h.batches, 50);
    assert.equal(h.connected, true);
    assert.ok(h.lagMs !== null && h.lagMs >= 0 && h.lagMs < 5000);
    assert.deepEqual([h.gaps, h.replays, h.resets, h.historyMissing, h.malformedFrames, h.duplicates], [0, 0, 0, 0, 0, 0]);
  });

  test('duplicates are dropped and counted', async () => {
    const { pub, relay, sub, got } = await open();
    relay.rule = (seq) => (seq === 3n || seq === 7n ? 'dup' : 'pass');
    for (let i = 0; i < 10; i++) pub.publish(batchOf(i));
    await got.waitForSeq(9n);
    await sleep(50);
    assert.deepEqual(got.seqs(), range(0, 9));
    assert.deepEqual(got.notices(), []);
    assert.equal(sub.health().duplicates, 2);
  });

  test('malformed frames are counted and skipped; the stream goes on', async () => {
    const { pub, relay, sub, got } = await open();
    for (let i = 0; i < 5; i++) pub.publish(batchOf(i));
    await got.waitForSeq(4n);
    await relay.inject(['', encodeSeq(5n)]); // two frames
    await relay.inject(['', Buffer.alloc(7), Buffer.from([0x90])]); // 7-byte seq
    await relay.inject(['', encodeSeq(5n), Buffer.from([0xc1, 0xff, 0x00])]); // not MessagePack
    await relay.inject(['', encodeSeq(5n), Buffer.from([0x92, 0xcb])]); // truncated
    await relay.inject(['', encodeSeq(5n), Buffer.from([0x93, 0x01, 0x02, 0x03, 0x04])]); // wrong types
    await relay.inject(['', Buffer.alloc(8, 0xff), Buffer.alloc(0)]); // an end marker on the live stream
    await relay.inject(['', encodeSeq(5n), Buffer.alloc(0), Buffer.alloc(0)]); // four frames
    for (let i = 5; i < 10; i++) pub.publish(batchOf(i));
    await got.waitForSeq(9n);
    assert.deepEqual(got.seqs(), range(0, 9));
    assert.deepEqual(got.notices(), []);
    assert.equal(sub.health().malformedFrames, 7);
  });

  test('topic is a prefix filter: a matching prefix gets the batches, another topic none', async () => {
    const { pub, got } = await open({ config: { topic: 'kv-events' }, subscriber: { topic: 'kv' } });
    pub.publish(batchOf(0));
    await got.waitForSeq(0n);
    const match = new Collector();
    const other = new Collector();
    const sMatch = new KVEventSubscriber({ endpoint: connectAddressFor(pub.endpoint), topic: 'kv-ev', onItem: match.onItem });
    const sOther = new KVEventSubscriber({ endpoint: connectAddressFor(pub.endpoint), topic: 'other', onItem: other.onItem });
    await Promise.all([sMatch.start(), sOther.start()]);
    await waitFor(() => sMatch.health().connected && sOther.health().connected, 'both connected');
    // Positive control: publish until the matching subscriber (connected alongside) receives.
    let i = 1;
    await waitFor(() => (pub.publish(batchOf(i++)), match.seqs().length > 0), 'the matching subscriber to receive');
    const lastSeq = BigInt(i - 1);
    await match.waitForSeq(lastSeq);
    await got.waitForSeq(lastSeq);
    assert.ok(match.items.every((x) => x.kind !== 'batch' || x.topic === 'kv-events'));
    assert.equal(other.items.length, 0);
    await Promise.all([sMatch.close(), sOther.close()]);
  });

  test('close() while start() is attaching: no socket or timer outlives it', async () => {
    const { pub } = await open();
    const opts = { endpoint: connectAddressFor(pub.endpoint), replayEndpoint: connectAddressFor(pub.replayEndpoint!), idleProbeMs: 50 };
    const closed = new Collector();
    const s = new KVEventSubscriber({ ...opts, onItem: closed.onItem });
    const starting = s.start();
    await s.close();
    await starting;
    const control = new Collector();
    const c = new KVEventSubscriber({ ...opts, onItem: control.onItem });
    await c.start();
    let i = 0;
    await waitFor(() => (pub.publish(batchOf(i++)), control.seqs().length > 0), 'the control subscriber to receive');
    await waitFor(() => c.health().probes > 0, 'the control subscriber to probe');
    const h = s.health();
    assert.deepEqual([closed.items.length, h.connected, h.probes, h.batches], [0, false, 0, 0]);
    await c.close();
  });

  test('start(): throws for an invalid endpoint, never for an unreachable one; close is clean', async () => {
    await assert.rejects(new KVEventSubscriber({ endpoint: 'nonsense', onItem: () => {} }).start(), /transport/);
    await assert.rejects(new KVEventSubscriber({ endpoint: 'tcp://127.0.0.1:1', replayEndpoint: 'x', onItem: () => {} }).start());
    const port = await freePort();
    const s = new KVEventSubscriber({ endpoint: `tcp://127.0.0.1:${port}`, replayEndpoint: `tcp://127.0.0.1:${port + 1}`, onItem: () => {} });
    await s.start();
    await sleep(50);
    const h = s.health();
    assert.equal(h.connected, false);
    assert.equal(h.lastSeq, null);
    assert.equal(h.trusted, false);
    await s.close();
  });

  test('reconnects on its own: a publisher that comes up later is followed', async () => {
    const ep = tmpIpc('late');
    const got = new Collector();
    const s = new KVEventSubscriber({ endpoint: ep, onItem: got.onItem });
    await s.start();
    const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: ep }) });
    await waitFor(() => s.health().connected, 'connection');
    await sleep(100);
    for (let i = 0; i < 3; i++) pub.publish(batchOf(i));
    await got.waitForSeq(2n);
    assert.deepEqual(got.seqs(), range(0, 2));
    await s.close();
    await pub.close(100);
  });

  test('an exception in onItem is logged and does not stop the stream', async () => {
    const got = new Collector();
    const { pub } = await open();
    const s = new KVEventSubscriber({
      endpoint: connectAddressFor(pub.endpoint),
      onItem: (item) => {
        got.onItem(item);
        if (item.kind === 'batch' && item.seq === 1n) throw new Error('consumer bug (expected in this test)');
      },
    });
    const log = console.error;
    console.error = () => {};
    try {
      await s.start();
      await sleep(200);
      for (let i = 0; i < 3; i++) pub.publish(batchOf(i));
      await got.waitForSeq(2n);
    } finally {
      console.error = log;
      await s.close();
    }
  });
});

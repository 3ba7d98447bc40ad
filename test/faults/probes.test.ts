/**
 * The subscriber's sync probes, in process (fast, deterministic): holes that no later live
 * batch reveals. Tail of a burst lost; a late join to a quiet publisher; a publisher restarted
 * that has published nothing yet; idle probes back off.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { KVEventSubscriber } from '../../src/events/subscriber.js';
import { Collector, range } from '../helpers/collector.js';
import { batchOf } from '../helpers/events.js';
import { removeIpcEndpoints, sleep, tmpIpc, waitFor } from '../helpers/net.js';
import { rig } from '../helpers/stream.js';

const cleanups: Array<() => unknown> = [];

describe('sync probes', { timeout: 60_000 }, () => {
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    removeIpcEndpoints();
  });

  test('the tail of a burst lost: found by the idle probe, applied in order, no notice', async () => {
    const r = await rig();
    cleanups.push(() => r.close());
    for (let i = 0; i < 5; i++) r.pub.publish(batchOf(i));
    await r.got.waitForSeq(4n);
    r.relay.rule = () => 'drop';
    for (let i = 5; i < 8; i++) r.pub.publish(batchOf(i));
    await r.pub.flush();
    await sleep(50);
    await r.got.waitForSeq(7n, 5000);
    assert.deepEqual(r.got.seqs(), range(0, 7));
    assert.deepEqual(r.got.notices(), []);
    assert.equal(r.sub.health().probeFinds, 1);
    assert.equal(r.sub.health().trusted, true);
  });

  test('late join to a quiet publisher: replayed from 0 within an idle period, trusted', async () => {
    const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: tmpIpc('pub'), replay_endpoint: tmpIpc('rep') }) });
    cleanups.push(() => pub.close(100));
    for (let i = 0; i < 5; i++) pub.publish(batchOf(i));
    await pub.flush();
    const got = new Collector();
    const sub = new KVEventSubscriber({ endpoint: pub.endpoint, replayEndpoint: pub.replayEndpoint, onItem: got.onItem });
    await sub.start();
    cleanups.push(() => sub.close());
    await got.waitForSeq(4n, 5000);
    assert.deepEqual(got.replayedSeqs(), range(0, 4));
    assert.equal(sub.health().trusted, true);
  });

  test('a fresh publisher that has published nothing: the empty tree is trusted', async () => {
    const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: tmpIpc('pub'), replay_endpoint: tmpIpc('rep') }) });
    cleanups.push(() => pub.close(100));
    const sub = new KVEventSubscriber({ endpoint: pub.endpoint, replayEndpoint: pub.replayEndpoint, onItem: () => {} });
    await sub.start();
    cleanups.push(() => sub.close());
    await waitFor(() => sub.health().trusted, 'trusted', 5000);
  });

  test('publisher restarted and silent: reset at reconnect (its cache is gone), then trusted again', async () => {
    const ep = tmpIpc('pub');
    const rep = tmpIpc('rep');
    const config = parseKVEventsConfig({ endpoint: ep, replay_endpoint: rep });
    const first = await KVEventPublisher.create({ config });
    for (let i = 0; i < 5; i++) first.publish(batchOf(i));
    const got = new Collector();
    const sub = new KVEventSubscriber({ endpoint: ep, replayEndpoint: rep, onItem: got.onItem });
    await sub.start();
    cleanups.push(() => sub.close());
    await got.waitForSeq(4n, 5000);
    await first.close(100);
    const second = await KVEventPublisher.create({ config });
    cleanups.push(() => second.close(100));
    await got.waitForNotice('reset', 5000);
    await waitFor(() => sub.health().trusted, 'trusted again', 5000);
    second.publish(batchOf(100));
    await waitFor(() => got.seqs(true).includes(0n), 'seq 0 of the new run', 5000);
    assert.equal(sub.health().resets, 1);
  });

  test('idle probes back off (1, 2, 4 … s), and stop nothing else', async () => {
    const r = await rig();
    cleanups.push(() => r.close());
    r.pub.publish(batchOf(0));
    await r.got.waitForSeq(0n);
    const quietFrom = Date.now();
    // A probe is never early (it may be late under load): the first one idle period after the last batch,
    // the second two periods after the first. Waits are on the probe count, bounded.
    await waitFor(() => r.sub.health().probes >= 1, 'the first idle probe', 5000);
    const first = Date.now();
    await waitFor(() => r.sub.health().probes >= 2, 'the second idle probe', 8000);
    const second = Date.now();
    assert.ok(first - quietFrom >= 900, `first probe ${first - quietFrom} ms after the last batch (idle period 1000)`);
    assert.ok(second - first >= 1800, `second probe ${second - first} ms after the first (backed off to 2000)`);
    assert.equal(r.sub.health().probes, 2, 'no probe in between');
    r.pub.publish(batchOf(1));
    await r.got.waitForSeq(1n);
    assert.deepEqual(r.got.notices(), []);
  });
});

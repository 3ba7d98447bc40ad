/** StreamFeed's silent-publisher warning, against real publishers (the clock is injected: no sleeps). */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { StreamFeed, silenceVerdict } from '../../router/streams.js';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { batchOf } from '../helpers/events.js';
import { freePort, waitFor } from '../helpers/net.js';

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

const sink = { applyBatch: () => {}, clearSource: () => {} };
let clock = 0;
async function feed(endpoint: string, topic: string, logs: string[]): Promise<StreamFeed> {
  const f = new StreamFeed('w0/0', endpoint, null, topic, sink, (m) => logs.push(m), null, { silence: { requests: 3, afterMs: 1000 }, now: () => clock });
  await f.start();
  closers.push(() => f.close());
  return f;
}
async function publisher(topic: string): Promise<KVEventPublisher> {
  const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', topic }) });
  closers.push(() => p.close(100));
  return p;
}
function routeMany(f: StreamFeed, n: number, stepMs: number): void {
  for (let i = 0; i < n; i++) {
    clock += stepMs;
    f.noteRouted();
  }
}

describe('silent publishers', { timeout: 20_000 }, () => {
  test('a stream that never connects: warned once, named cause, counted', async () => {
    const logs: string[] = [];
    const f = await feed(`tcp://127.0.0.1:${await freePort()}`, 'kv', logs);
    routeMany(f, 2, 600);
    assert.equal(f.health().silent, null, 'not before the thresholds');
    routeMany(f, 3, 600);
    const h = f.health();
    assert.match(h.silent ?? '', /never connected.*bind\/connect mismatch/);
    assert.equal(h.silentWarnings, 1);
    assert.equal(h.routedWithoutEvents, 5);
    assert.equal(logs.filter((l) => l.includes('silent')).length, 1);
  });

  test('connected but nothing arrives (events off or another topic) vs a stream that delivers', async () => {
    const quietLogs: string[] = [];
    const liveLogs: string[] = [];
    const pub = await publisher('kv-events');
    const quiet = await feed(connectAddressFor(pub.endpoint), 'other-topic', quietLogs);
    const live = await feed(connectAddressFor(pub.endpoint), 'kv-events', liveLogs);
    await waitFor(() => quiet.health().connected && live.health().connected, 'both connected');
    let i = 0;
    await waitFor(() => (pub.publish(batchOf(i++)), live.health().batches > 0), 'the live feed to get a batch');
    // Same publisher, same routing: the live feed keeps getting batches between requests, the quiet one none.
    for (let r = 0; r < 4; r++) {
      const before = live.health().batches;
      pub.publish(batchOf(i++));
      await waitFor(() => live.health().batches > before, 'a batch');
      routeMany(quiet, 1, 500);
      clock -= 500;
      routeMany(live, 1, 500);
    }
    assert.match(quiet.health().silent ?? '', /enable_kv_cache_events.*"other-topic"/);
    assert.equal(quiet.health().silentWarnings, 1);
    assert.equal(quiet.health().routedWithoutEvents, 4);
    assert.equal(live.health().silent, null);
    assert.equal(live.health().silentWarnings, 0);
    assert.equal(liveLogs.length, 0);
  });

  test('silenceVerdict: thresholds', () => {
    const where = { endpoint: 'tcp://h:1', topic: '' };
    assert.equal(silenceVerdict({ routed: 5, firstRoutedAt: null, connected: false, batches: 0 }, where, 0), null);
    assert.equal(silenceVerdict({ routed: 4, firstRoutedAt: 0, connected: false, batches: 0 }, where, 60_000), null);
    assert.equal(silenceVerdict({ routed: 5, firstRoutedAt: 0, connected: true, batches: 0 }, where, 9_999), null);
    assert.match(silenceVerdict({ routed: 5, firstRoutedAt: 0, connected: true, batches: 0 }, where, 10_000)!, /ever arrived/);
  });
});

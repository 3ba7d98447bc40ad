/**
 * A burst of replay requests at one publisher: publishing goes on (live batches keep flowing,
 * in order), replay work is bounded (at most maxPendingReplays queued; the rest dropped and
 * counted; the clients time out and say so), memory stays bounded.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as zmq from 'zeromq';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { encodeSeq } from '../../src/events/frames.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { requestReplay } from '../../src/events/replay-client.js';
import { batchOf } from '../helpers/events.js';
import { sleep, waitFor } from '../helpers/net.js';
import { rawSubscriber } from '../helpers/raw.js';
import { figure } from './pipeline.js';

const cleanups: Array<() => unknown> = [];
// Heap after a full GC: what the burst leaves behind (RSS also counts allocator slack and ZeroMQ's native buffers).
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapAfterGcMb = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 1e6;
};

describe('replay burst', { timeout: 100_000 }, () => {
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  test('a burst of 400 replay requests at one publisher: publishing goes on, replay work bounded', async () => {
    const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0', buffer_steps: 5000 }) });
    cleanups.push(() => pub.close(100));
    const { sub, next } = await rawSubscriber(connectAddressFor(pub.endpoint));
    cleanups.push(() => sub.close());
    for (let i = 0; i < 5000; i++) pub.publish(batchOf(i, 4));
    await pub.flush();
    for (let i = 0; i < 5000; i++) await next(5000);
    const heap0 = heapAfterGcMb();
    let maxPending = 0;
    let publishing = true;
    const published: bigint[] = [];
    const writer = (async () => {
      for (let i = 5000; publishing; i++) {
        published.push(pub.publish(batchOf(i, 4)));
        maxPending = Math.max(maxPending, pub.stats().pendingReplays);
        await sleep(2);
      }
    })();
    const dealers = Array.from({ length: 400 }, () => {
      const d = new zmq.Dealer({ linger: 0 });
      d.connect(connectAddressFor(pub.replayEndpoint!));
      return d;
    });
    cleanups.push(() => dealers.forEach((d) => d.close()));
    await Promise.all(dealers.map((d) => d.send(['', encodeSeq(0n)])));
    // Live batches keep flowing, in order, while the burst is served.
    const t0 = Date.now();
    let live = 5000n;
    while (Date.now() - t0 < 3000) {
      const m = await next(5000);
      assert.equal(m[1]!.readBigUInt64BE(), live++);
    }
    publishing = false;
    await writer;
    const s = pub.stats();
    assert.ok(live - 5000n > 50n, `live batches flowed during the burst (${live - 5000n})`);
    assert.ok(s.droppedReplayRequests > 0, 'excess requests were dropped');
    assert.ok(maxPending <= 64, `at most 64 replays queued (${maxPending})`);
    assert.equal(s.replayRequests, 400);
    // Once the clients are gone, every queued replay ends (abandoned or served) and its snapshot is freed.
    dealers.forEach((d) => d.close());
    await waitFor(() => pub.stats().pendingReplays === 0, 'the queued replays to end', 30_000);
    published.length = 0;
    // The ring holds the same 5000 batches as before (a few MB); 64 leftover snapshots of it would be
    // 64 × 5000 references (~2.5 MB), the 400 requests' messages more: 8 MB is well above noise, below a leak.
    const grown = heapAfterGcMb() - heap0;
    assert.ok(grown < 8, `heap after GC grew ${grown.toFixed(1)} MB`);
    figure({ kind: 'fault', fault: 'replay burst (400 requests)', divergent: 0, recoverMs: null, outcome: `served ${400 - s.droppedReplayRequests}, dropped ${s.droppedReplayRequests}` });
  });

  test('after the burst, a normal replay is served in full', async () => {
    const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0', buffer_steps: 100 }) });
    cleanups.push(() => pub.close(100));
    for (let i = 0; i < 100; i++) pub.publish(batchOf(i));
    await pub.flush();
    const r = await requestReplay(connectAddressFor(pub.replayEndpoint!), 0n, { timeoutMs: 5000 });
    assert.equal(r.status, 'done');
    assert.equal(r.batches.length, 100);
  });
});

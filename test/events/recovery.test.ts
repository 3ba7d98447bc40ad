/**
 * Replay-from-seq recovery: every scenario ends with the applied sequence equal to
 * what the publisher sent, or with the hole announced by a history_missing notice.
 */
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import * as zmq from 'zeromq';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher } from '../../src/events/publisher.js';
import { KVEventSubscriber, type StreamNotice } from '../../src/events/subscriber.js';
import { assertAccounted, Collector, range } from '../helpers/collector.js';
import { batchOf } from '../helpers/events.js';
import { freePort, sleep, waitFor } from '../helpers/net.js';
import { PublisherProcess } from '../helpers/child.js';
import { FrameRelay } from '../helpers/relay.js';
import { ReplayProxy } from '../helpers/replay-proxy.js';
import { rig, type Rig } from '../helpers/stream.js';

const cleanups: Array<() => Promise<void> | void> = [];
async function open(opts: Parameters<typeof rig>[0] = {}): Promise<Rig> {
  const r = await rig(opts);
  cleanups.push(() => r.close());
  return r;
}
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const notice = (n: StreamNotice) => n;

describe('recovery', { timeout: 50_000 }, () => {
  test('gap → replay from last + 1, live batches held, then applied in order', async () => {
    const { pub, relay, sub, got } = await open();
    relay.rule = (seq) => (seq !== null && seq >= 5n && seq <= 7n ? 'drop' : 'pass');
    // 8 reveals the gap; the replay (from 5) runs before 9.. are published, so its notice is exact.
    for (let i = 0; i <= 8; i++) pub.publish(batchOf(i));
    await got.waitForSeq(8n);
    for (let i = 9; i < 20; i++) pub.publish(batchOf(i));
    await got.waitForSeq(19n);
    assert.deepEqual(got.seqs(), range(0, 19));
    // 5..7 come from the replay; live 8 (parked when it revealed the gap) follows them, its replayed copy is a duplicate.
    assert.deepEqual(got.notices(), [notice({ notice: 'gap', expected: 5n, got: 8n }), notice({ notice: 'replay', from: 5n, to: 8n, batches: 3 })]);
    assert.deepEqual(got.replayedSeqs(), [5n, 6n, 7n]);
    assertAccounted(got.items, 20);
    const h = sub.health();
    assert.equal(h.trusted, true);
    assert.equal(h.gaps, 1);
    assert.equal(h.replays, 1);
  });

  test('a long replay comes in byte-bounded chunks, applied as they come, one replay notice', async () => {
    const { pub, relay, sub, got } = await open({ subscriber: { maxReplayBytes: 4096 } });
    relay.rule = (seq) => (seq !== null && seq >= 1n && seq < 500n ? 'drop' : 'pass');
    pub.publish(batchOf(0));
    await got.waitForSeq(0n);
    for (let i = 1; i <= 500; i++) pub.publish(batchOf(i));
    await got.waitForSeq(500n, 10_000);
    assert.deepEqual(got.seqs(), range(0, 500));
    assert.deepEqual(got.notices(), [notice({ notice: 'gap', expected: 1n, got: 500n }), notice({ notice: 'replay', from: 1n, to: 500n, batches: 499 })]);
    assert.equal(sub.health().trusted, true);
    assert.ok(pub.stats().replayRequests > 10, `asked in chunks: ${pub.stats().replayRequests} requests`);
  });

  test('reordered frames: the early one waits, the late one is a duplicate', async () => {
    const { pub, relay, got } = await open();
    relay.rule = (seq) => (seq === 4n ? 'hold' : 'pass');
    for (let i = 0; i < 8; i++) pub.publish(batchOf(i));
    await got.waitForSeq(7n);
    await relay.release();
    for (let i = 8; i < 10; i++) pub.publish(batchOf(i));
    await got.waitForSeq(9n);
    assertAccounted(got.items, 10);
    assert.deepEqual(got.seqs(), range(0, 9));
  });

  test('a paused subscriber (many batches lost) catches up through one replay', async () => {
    const { pub, relay, got } = await open();
    let paused = false;
    relay.rule = () => (paused ? 'drop' : 'pass');
    for (let i = 0; i < 10; i++) pub.publish(batchOf(i));
    await got.waitForSeq(9n);
    paused = true;
    for (let i = 10; i < 3000; i++) pub.publish(batchOf(i));
    await pub.flush();
    await sleep(50);
    paused = false;
    for (let i = 3000; i < 3010; i++) pub.publish(batchOf(i));
    await got.waitForSeq(3009n, 10_000);
    assertAccounted(got.items, 3010);
    assert.deepEqual(got.noticeKinds(), ['gap', 'replay']);
  });

  test('batches lost to a full HWM (stalled consumer, publisher in another process) are replayed', async () => {
    const { proc, endpoint, replayEndpoint } = await PublisherProcess.start({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0', hwm: 10, buffer_steps: 20000 });
    cleanups.push(() => proc.stop());
    const marker = join(tmpdir(), `kvr-marker-${process.pid}-${Date.now()}`);
    cleanups.push(() => rmSync(marker, { force: true }));
    const got = new Collector();
    let stalled = false;
    const sub = new KVEventSubscriber({
      endpoint: connectAddressFor(endpoint),
      replayEndpoint: connectAddressFor(replayEndpoint!),
      hwm: 10,
      replayTimeoutMs: 5000,
      onItem: (item) => {
        got.onItem(item);
        if (!stalled && item.kind === 'batch') {
          stalled = true;
          // A consumer that stops reading until the publisher has sent everything.
          const until = Date.now() + 20_000;
          while (!existsSync(marker) && Date.now() < until);
        }
      },
    });
    await sub.start();
    cleanups.push(() => sub.close());
    await waitFor(() => sub.health().connected, 'connected');
    await sleep(200);
    const sent = await proc.publish(3000, 32, marker);
    await proc.publish(1, 1);
    await got.waitForSeq(BigInt(sent), 20_000);
    if (process.env.DEBUG_NOTICES) console.log(got.notices(), sub.health());
    assertAccounted(got.items, sent + 1);
    assert.ok(sub.health().gaps >= 1, 'the HWM really dropped batches');
    assert.ok(got.replayedSeqs().length > 0);
    assert.deepEqual(got.noticeKinds().filter((k) => k.startsWith('history_missing')), []);
  });

  test('late join: first batch seen has seq > 0 → replay from 0 first', async () => {
    const pubCfg = parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0' });
    const pub = await KVEventPublisher.create({ config: pubCfg });
    cleanups.push(() => pub.close(100));
    for (let i = 0; i < 20; i++) pub.publish(batchOf(i));
    await pub.flush();
    const got = new Collector();
    const sub = new KVEventSubscriber({ endpoint: connectAddressFor(pub.endpoint), replayEndpoint: connectAddressFor(pub.replayEndpoint!), onItem: got.onItem });
    await sub.start();
    cleanups.push(() => sub.close());
    await waitFor(() => sub.health().connected, 'connected');
    await sleep(100);
    assert.equal(sub.health().trusted, false);
    for (let i = 20; i < 30; i++) pub.publish(batchOf(i));
    await got.waitForSeq(29n);
    assertAccounted(got.items, 30);
    assert.deepEqual(got.noticeKinds(), ['replay']);
    assert.deepEqual(got.replayedSeqs().slice(0, 20), range(0, 19));
    assert.equal(sub.health().trusted, true);
  });

  test('fromSeq: replays from there at start, even from an idle publisher', async () => {
    const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', replay_endpoint: 'tcp://*:0' }) });
    cleanups.push(() => pub.close(100));
    for (let i = 0; i < 20; i++) pub.publish(batchOf(i));
    await pub.flush();
    const got = new Collector();
    const sub = new KVEventSubscriber({ endpoint: connectAddressFor(pub.endpoint), replayEndpoint: connectAddressFor(pub.replayEndpoint!), fromSeq: 10n, onItem: got.onItem });
    await sub.start();
    cleanups.push(() => sub.close());
    await got.waitForSeq(19n);
    assert.deepEqual(got.seqs(), range(10, 19));
    assert.deepEqual(got.notices(), [notice({ notice: 'replay', from: 10n, to: 19n, batches: 10 })]);
    await sleep(100);
    for (let i = 20; i < 25; i++) pub.publish(batchOf(i));
    await got.waitForSeq(24n);
    assertAccounted(got.items, 25, { from: 10n });
    assert.equal(sub.health().trusted, false, 'history before fromSeq is unknown');
  });

  test('publisher restart (seq goes back) → reset notice, then the new run applied from 0', async () => {
    const [port, rport] = [await freePort(), await freePort()];
    const cfg = parseKVEventsConfig({ endpoint: `tcp://*:${port}`, replay_endpoint: `tcp://*:${rport}` });
    const got = new Collector();
    const sub = new KVEventSubscriber({ endpoint: `tcp://127.0.0.1:${port}`, replayEndpoint: `tcp://127.0.0.1:${rport}`, onItem: got.onItem });
    await sub.start();
    cleanups.push(() => sub.close());
    let pub = await KVEventPublisher.create({ config: cfg });
    await waitFor(() => sub.health().connected, 'connected');
    await sleep(100);
    for (let i = 0; i < 10; i++) pub.publish(batchOf(i));
    await got.waitForSeq(9n);
    await pub.close(500);
    pub = await createWithRetry(() => KVEventPublisher.create({ config: cfg }));
    cleanups.push(() => pub.close(100));
    await waitFor(() => sub.health().connected, 'reconnected', 10_000);
    for (let i = 0; i < 5; i++) pub.publish(batchOf(100 + i));
    await got.waitForNotice('reset', 10_000);
    await waitFor(() => got.seqs(true).length >= 5, 'new run', 10_000);
    const reset = got.notices().find((n) => n.notice === 'reset')!;
    assert.equal(reset.notice === 'reset' && reset.lastSeq, 9n);
    assertAccounted(got.items.slice(0, got.items.indexOf(got.items.find((x) => x.kind === 'notice' && x.notice.notice === 'reset')!)), 10);
    assertAccounted(got.items, 5, { sinceReset: true });
    const fresh = got.items.filter((x) => x.kind === 'batch').slice(10);
    assert.deepEqual(fresh.map((x) => x.kind === 'batch' && x.batch.events), range(0, 4).map((i) => batchOf(100 + Number(i))));
    assert.equal(sub.health().resets, 1);
    assert.equal(sub.health().trusted, true);
  });

  test('restart whose first batches were missed (seq overtook ours) is caught by the anchored replay', async () => {
    const [port, rport] = [await freePort(), await freePort()];
    const cfg = parseKVEventsConfig({ endpoint: `tcp://*:${port}`, replay_endpoint: `tcp://*:${rport}` });
    let pub = await KVEventPublisher.create({ config: cfg });
    const relay = await FrameRelay.create(`tcp://127.0.0.1:${port}`);
    cleanups.push(() => relay.close());
    const got = new Collector();
    const sub = new KVEventSubscriber({ endpoint: relay.endpoint, replayEndpoint: `tcp://127.0.0.1:${rport}`, onItem: got.onItem });
    await sub.start();
    cleanups.push(() => sub.close());
    await relay.waitForSubscriber();
    for (let i = 0; i < 5; i++) pub.publish(batchOf(i));
    await got.waitForSeq(4n);
    await pub.close(200);
    relay.rule = (seq) => (seq !== null && seq <= 6n ? 'drop' : 'pass'); // the new run's 0..6 never reach the subscriber
    pub = await createWithRetry(() => KVEventPublisher.create({ config: cfg }));
    cleanups.push(() => pub.close(100));
    await waitFor(() => relay.upstreamConnects >= 2, 'relay reconnected', 10_000);
    await sleep(100);
    for (let i = 0; i < 10; i++) pub.publish(batchOf(100 + i));
    await got.waitForNotice('reset', 10_000);
    await waitFor(() => got.seqs(true).length >= 10, 'new run', 10_000);
    const reset = got.notices().find((n) => n.notice === 'reset');
    assert.deepEqual(reset, notice({ notice: 'reset', reason: 'restart', lastSeq: 4n, seq: 4n }));
    assertAccounted(got.items, 10, { sinceReset: true });
    const fresh = got.items.filter((x) => x.kind === 'batch').slice(5);
    assert.deepEqual(fresh.map((x) => x.kind === 'batch' && x.batch.events), range(0, 9).map((i) => batchOf(100 + Number(i))));
  });

  test('replay buffer smaller than the gap → history_missing buffer_exceeded, then what follows', async () => {
    const { pub, relay, sub, got } = await open({ config: { buffer_steps: 5 } });
    relay.rule = (seq) => (seq !== null && seq >= 3n && seq <= 12n ? 'drop' : 'pass');
    for (let i = 0; i < 20; i++) pub.publish(batchOf(i));
    await got.waitForSeq(19n);
    const holes = assertAccounted(got.items, 20);
    assert.equal(holes.length, 1);
    assert.equal(holes[0]![0], 3n);
    assert.ok(holes[0]![1] >= 13n && holes[0]![1] <= 15n, `resumed at ${holes[0]![1]}`);
    assert.ok(got.noticeKinds().includes('history_missing:buffer_exceeded'));
    assert.equal(sub.health().trusted, false);
    assert.equal(sub.health().historyMissing, 1);
  });

  test('replay with the legacy reply shape ["", seq, payload] is understood', async () => {
    const { pub, relay, got } = await open({ config: { topic: 'kv' }, publisher: { replayShape: 'legacy' } });
    relay.rule = (seq) => (seq === 3n || seq === 4n ? 'drop' : 'pass');
    for (let i = 0; i < 8; i++) pub.publish(batchOf(i));
    await got.waitForSeq(7n);
    assertAccounted(got.items, 8);
    assert.deepEqual(got.noticeKinds(), ['gap', 'replay']);
    const replayed = got.items.find((x) => x.kind === 'batch' && x.replayed);
    assert.ok(replayed?.kind === 'batch' && replayed.topic === 'kv', 'legacy replies carry no topic: the live topic is used');
  });

  test('an unreadable batch inside a replay → history_missing replay_malformed for exactly that seq', async () => {
    const { pub, relay, sub, got } = await open();
    const proxy = await ReplayProxy.create(connectAddressFor(pub.replayEndpoint!));
    cleanups.push(() => proxy.close());
    const s2got = new Collector();
    const s2 = new KVEventSubscriber({ endpoint: relay.endpoint, replayEndpoint: proxy.endpoint, onItem: s2got.onItem });
    await s2.start();
    cleanups.push(() => s2.close());
    await sleep(200);
    relay.rule = (seq) => (seq !== null && seq >= 2n && seq <= 5n ? 'drop' : 'pass');
    proxy.rule = (seq) => (seq === 3n ? 'corrupt' : 'pass');
    for (let i = 0; i < 8; i++) pub.publish(batchOf(i));
    await s2got.waitForSeq(7n);
    await got.waitForSeq(7n);
    assert.deepEqual(proxy.requests, [1n], 'asked from the last applied seq (anchor), i.e. last + 1 and its predecessor');
    const holes = assertAccounted(s2got.items, 8);
    assert.deepEqual(holes, [[3n, 4n]]);
    assert.ok(s2got.noticeKinds().includes('history_missing:replay_malformed'));
    assert.equal(s2.health().malformedFrames, 1);
    assertAccounted(got.items, 8); // the direct replay endpoint served the other subscriber fully
    assert.equal(sub.health().historyMissing, 0);
  });

  test('no replay endpoint → gap and history_missing no_replay_endpoint; AllBlocksCleared restores trust', async () => {
    const { pub, relay, sub, got } = await open({ config: { replay_endpoint: null } });
    relay.rule = (seq) => (seq !== null && seq >= 3n && seq <= 5n ? 'drop' : 'pass');
    for (let i = 0; i < 10; i++) pub.publish(batchOf(i));
    await got.waitForSeq(9n);
    assert.deepEqual(got.notices(), [
      notice({ notice: 'gap', expected: 3n, got: 6n }),
      notice({ notice: 'history_missing', reason: 'no_replay_endpoint', from: 3n, resumedAt: 6n }),
    ]);
    assertAccounted(got.items, 10);
    assert.equal(sub.health().trusted, false);
    pub.publish([{ type: 'AllBlocksCleared' }]);
    await got.waitForSeq(10n);
    assert.equal(sub.health().trusted, true);
  });

  test('late join without a replay endpoint → history_missing from 0', async () => {
    const pub = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0' }) });
    cleanups.push(() => pub.close(100));
    for (let i = 0; i < 5; i++) pub.publish(batchOf(i));
    await pub.flush();
    const got = new Collector();
    const sub = new KVEventSubscriber({ endpoint: connectAddressFor(pub.endpoint), onItem: got.onItem });
    await sub.start();
    cleanups.push(() => sub.close());
    await waitFor(() => sub.health().connected, 'connected');
    await sleep(100);
    for (let i = 5; i < 8; i++) pub.publish(batchOf(i));
    await got.waitForSeq(7n);
    assert.deepEqual(got.notices(), [notice({ notice: 'history_missing', reason: 'no_replay_endpoint', from: 0n, resumedAt: 5n })]);
    assertAccounted(got.items, 8);
  });

  test('silent replay endpoint → history_missing replay_timeout (not buffer_exceeded)', async () => {
    const silent = new zmq.Router({ linger: 0 });
    await silent.bind('tcp://127.0.0.1:0');
    cleanups.push(() => silent.close());
    void (async () => {
      while (!silent.closed) await silent.receive().catch(() => {});
    })();
    const { pub, relay, sub, got } = await open({ subscriber: { replayEndpoint: silent.lastEndpoint!, replayTimeoutMs: 300 } });
    relay.rule = (seq) => (seq === 2n ? 'drop' : 'pass');
    for (let i = 0; i < 6; i++) pub.publish(batchOf(i));
    await got.waitForSeq(5n);
    assert.deepEqual(got.notices(), [
      notice({ notice: 'gap', expected: 2n, got: 3n }),
      notice({ notice: 'history_missing', reason: 'replay_timeout', from: 2n, resumedAt: 3n }),
    ]);
    assertAccounted(got.items, 6);
    assert.equal(sub.health().replays, 0);
  });

  test('unreachable replay endpoint → replay_timeout too', async () => {
    const port = await freePort();
    const { pub, relay, got } = await open({ subscriber: { replayEndpoint: `tcp://127.0.0.1:${port}`, replayTimeoutMs: 300 } });
    relay.rule = (seq) => (seq === 1n ? 'drop' : 'pass');
    for (let i = 0; i < 4; i++) pub.publish(batchOf(i));
    await got.waitForSeq(3n);
    assert.deepEqual(got.noticeKinds(), ['gap', 'history_missing:replay_timeout']);
    assertAccounted(got.items, 4);
  });

  test('live batches arriving during a replay are held and applied after it, in order', async () => {
    const { pub, relay, got } = await open({ config: { buffer_steps: 20000 } });
    relay.rule = (seq) => (seq === 1n ? 'drop' : 'pass');
    for (let i = 0; i < 3; i++) pub.publish(batchOf(i));
    await pub.flush();
    let writing = true;
    const writer = (async () => {
      for (let i = 3; writing || i < 2000; i++) {
        pub.publish(batchOf(i));
        if (i % 50 === 0) await sleep(1);
        if (i > 20000) break;
      }
    })();
    await got.waitForNotice('replay', 10_000);
    writing = false;
    await writer;
    await pub.flush();
    const sent = Number(pub.stats().nextSeq);
    await got.waitForSeq(BigInt(sent - 1), 10_000);
    assertAccounted(got.items, sent);
  });
});

async function createWithRetry<T>(make: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await make();
    } catch (err) {
      if (attempt > 50 || !/in use/i.test((err as Error).message)) throw err;
      await sleep(50);
    }
  }
}

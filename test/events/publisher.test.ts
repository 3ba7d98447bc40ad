import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import * as zmq from 'zeromq';
import { decodeBatch } from '../../src/events/codec.js';
import { connectAddressFor, parseKVEventsConfig } from '../../src/events/config.js';
import { decodeSeq, encodeSeq } from '../../src/events/frames.js';
import { rig } from '../helpers/stream.js';
import { requestReplay } from '../../src/events/replay-client.js';
import { KVEventPublisher, PublisherClosedError, QueueFullError } from '../../src/events/publisher.js';
import { batchOf } from '../helpers/events.js';
import { freePort, freePortRange, removeIpcEndpoints, sleep, tmpIpc, waitFor } from '../helpers/net.js';
import { rawReplay, rawSubscriber } from '../helpers/raw.js';

const END = Buffer.alloc(8, 0xff);
const open: KVEventPublisher[] = [];
after(async () => {
  await Promise.all(open.map((p) => p.close(100)));
  removeIpcEndpoints();
});

async function publisher(cfg: object, opts: { dpRank?: number | null; replayShape?: 'current' | 'legacy'; encoding?: 'map' | 'array' } = {}) {
  const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://*:0', ...cfg }), ...opts });
  open.push(p);
  return p;
}

describe('publisher', { timeout: 30_000 }, () => {
  test('PUB frames are exactly [topic, seq, payload] from 0, with the dp rank filled in', async () => {
    const p = await publisher({ topic: 'kv-events' }, { dpRank: 0 });
    assert.match(p.endpoint, /^tcp:\/\/0\.0\.0\.0:\d+$/);
    const { sub, next } = await rawSubscriber(connectAddressFor(p.endpoint));
    for (let i = 0; i < 5; i++) assert.equal(p.publish(batchOf(i), 1790000000 + i), BigInt(i));
    for (let i = 0; i < 5; i++) {
      const frames = await next();
      assert.equal(frames.length, 3);
      assert.equal(frames[0]!.toString(), 'kv-events');
      assert.deepEqual(frames[1], encodeSeq(BigInt(i)));
      const batch = decodeBatch(frames[2]!);
      assert.equal(batch.ts, 1790000000 + i);
      assert.equal(batch.dp_rank, 0);
      assert.deepEqual(batch.events, batchOf(i));
    }
    assert.equal(p.stats().published, 5n);
    assert.equal(p.stats().nextSeq, 5n);
    sub.close();
  });

  test('empty topic is still sent as an (empty) first frame; no rank means a 2-element batch', async () => {
    const p = await publisher({}, { encoding: 'array' });
    const { sub, next } = await rawSubscriber(connectAddressFor(p.endpoint));
    p.publish(batchOf(1));
    const frames = await next();
    assert.equal(frames.length, 3);
    assert.equal(frames[0]!.length, 0);
    assert.equal(frames[2]![0], 0x92); // fixarray(2): [ts, events]
    assert.equal(decodeBatch(frames[2]!).dp_rank, null);
    sub.close();
  });

  test('data-parallel rank offsets both ports and is written into every batch', async () => {
    const base = await freePortRange(4);
    const p = await publisher({ endpoint: `tcp://*:${base}`, replay_endpoint: `tcp://*:${base + 2}` }, { dpRank: 1 });
    assert.equal(p.endpoint, `tcp://0.0.0.0:${base + 1}`); // zeromq's name for a bound *
    assert.equal(p.replayEndpoint, `tcp://0.0.0.0:${base + 3}`);
    const { sub, next } = await rawSubscriber(`tcp://127.0.0.1:${base + 1}`);
    p.publish(batchOf(0));
    assert.equal(decodeBatch((await next())[2]!).dp_rank, 1);
    sub.close();
  });

  test('a connect endpoint connects (the subscriber binds)', async () => {
    const base = await freePortRange(1);
    const sub = new zmq.Subscriber({ linger: 0, receiveTimeout: 3000 });
    sub.subscribe();
    await sub.bind(`tcp://127.0.0.1:${base}`);
    const p = await publisher({ endpoint: `tcp://127.0.0.1:${base}` });
    assert.equal(p.endpoint, `tcp://127.0.0.1:${base}`);
    // Receive first: a bound zeromq.js SUB may miss a message that lands before receive() is called.
    const received = sub.receive();
    await sleep(300);
    p.publish(batchOf(0));
    const frames = await received;
    assert.equal(decodeSeq(frames[1]!), 0n);
    sub.close();
  });

  test('0.0.0.0 connects (as vLLM); the replay socket binds even at a named host', async () => {
    const [pubPort, repPort] = [await freePort(), await freePort()];
    // The consumer binds the live endpoint; the publisher connects to it and binds its replay endpoint.
    const sub = new zmq.Subscriber({ linger: 0 });
    sub.subscribe();
    await sub.bind(`tcp://127.0.0.1:${pubPort}`);
    const p = await publisher({ endpoint: `tcp://0.0.0.0:${pubPort}`, replay_endpoint: `tcp://127.0.0.1:${repPort}` });
    try {
      assert.equal(p.endpoint, `tcp://0.0.0.0:${pubPort}`);
      assert.equal(p.replayEndpoint, `tcp://127.0.0.1:${repPort}`);
      const received = sub.receive();
      let n = 0;
      const pumping = setInterval(() => p.publish(batchOf(n++)), 20);
      const frames = await received;
      clearInterval(pumping);
      assert.equal(frames.length, 3);
      const r = await requestReplay(`tcp://127.0.0.1:${repPort}`, 0n, { timeoutMs: 3000 });
      assert.equal(r.status, 'done');
      assert.ok(r.batches.length >= 1 && r.batches[0]!.seq === 0n);
    } finally {
      sub.close();
    }
  });

  for (const shape of ['current', 'legacy'] as const) {
    test(`replay, ${shape} shape: every buffered batch from start_seq, then the end marker`, async () => {
      const p = await publisher({ topic: 't', replay_endpoint: 'tcp://*:0' }, { replayShape: shape });
      for (let i = 0; i < 20; i++) p.publish(batchOf(i));
      await p.flush();
      const { replies, ended } = await rawReplay(connectAddressFor(p.replayEndpoint!), ['', encodeSeq(5n)]);
      assert.ok(ended);
      assert.equal(replies.length, 16);
      replies.slice(0, 15).forEach((msg, i) => {
        assert.equal(msg[0]!.length, 0);
        if (shape === 'current') {
          assert.equal(msg.length, 4);
          assert.equal(msg[1]!.toString(), 't');
        } else assert.equal(msg.length, 3);
        assert.equal(decodeSeq(msg[msg.length - 2]!), BigInt(5 + i));
        assert.deepEqual(decodeBatch(msg[msg.length - 1]!).events, batchOf(5 + i));
      });
      const end = replies[15]!;
      assert.deepEqual(end, shape === 'current' ? [Buffer.alloc(0), Buffer.alloc(0), END, Buffer.alloc(0)] : [Buffer.alloc(0), END, Buffer.alloc(0)]);
      assert.equal(p.stats().replayRequests, 1);
    });
  }

  test('the ring buffer keeps the last buffer_steps batches', async () => {
    const p = await publisher({ replay_endpoint: 'tcp://*:0', buffer_steps: 10 });
    for (let i = 0; i < 30; i++) p.publish(batchOf(i));
    await p.flush();
    assert.equal(p.stats().buffered, 10);
    const { replies, ended } = await rawReplay(connectAddressFor(p.replayEndpoint!), ['', encodeSeq(0n)]);
    assert.ok(ended);
    assert.deepEqual(replies.slice(0, -1).map((m) => decodeSeq(m[2]!)), Array.from({ length: 10 }, (_, i) => BigInt(20 + i)));
    const past = await rawReplay(connectAddressFor(p.replayEndpoint!), ['', encodeSeq(100n)]);
    assert.equal(past.replies.length, 1); // only the end marker
  });

  test('a malformed replay request gets no reply and is counted; publishing goes on', async () => {
    const p = await publisher({ replay_endpoint: 'tcp://*:0' });
    const ep = connectAddressFor(p.replayEndpoint!);
    p.publish(batchOf(0));
    await p.flush();
    const bad: Array<Array<Buffer | string>> = [
      ['', Buffer.alloc(7)],
      ['', encodeSeq(0n), 'extra'],
      ['x', encodeSeq(0n)],
      [encodeSeq(0n)],
      ['', END],
    ];
    for (const req of bad) {
      const r = await rawReplay(ep, req, 150);
      assert.equal(r.replies.length, 0, `no reply to ${JSON.stringify(req)}`);
    }
    assert.equal(p.stats().malformedReplayRequests, bad.length);
    assert.equal(p.stats().replayRequests, 0);
    assert.equal(p.publish(batchOf(1)), 1n);
    await p.flush();
    const good = await rawReplay(ep, ['', encodeSeq(0n)]);
    assert.ok(good.ended);
    assert.equal(good.replies.length, 3);
  });

  test('concurrent replay clients while publishing: each gets a contiguous run from its start, live is intact', async () => {
    const p = await publisher({ replay_endpoint: 'tcp://*:0', buffer_steps: 5000 });
    const { sub, next } = await rawSubscriber(connectAddressFor(p.endpoint));
    for (let i = 0; i < 2000; i++) p.publish(batchOf(i));
    await p.flush();
    let publishing = true;
    const writer = (async () => {
      for (let i = 2000; publishing; i++) {
        p.publish(batchOf(i));
        if (i % 20 === 0) await sleep(0);
      }
    })();
    const starts = [0n, 100n, 1500n, 0n, 1999n, 0n, 700n, 42n];
    const results = await Promise.all(starts.map((s) => rawReplay(connectAddressFor(p.replayEndpoint!), ['', encodeSeq(s)], 5000)));
    publishing = false;
    await writer;
    await p.flush();
    results.forEach((r, k) => {
      assert.ok(r.ended, `client ${k} got its end marker`);
      const seqs = r.replies.slice(0, -1).map((m) => decodeSeq(m[2]!));
      assert.equal(seqs[0], starts[k]);
      seqs.forEach((s, i) => assert.equal(s, starts[k]! + BigInt(i)));
      assert.ok(seqs.length >= 2000 - Number(starts[k]!));
    });
    assert.equal(p.stats().replayRequests, starts.length);
    const total = Number(p.stats().nextSeq);
    for (let i = 0; i < total; i++) assert.equal(decodeSeq((await next())[1]!), BigInt(i));
    sub.close();
  });

  test('a full queue is an error the caller sees, and the refused batch consumes its seq', async () => {
    const p = await publisher({ max_queue_size: 5 });
    for (let i = 0; i < 5; i++) p.publish(batchOf(i));
    assert.throws(() => p.publish(batchOf(5)), (err: unknown) => err instanceof QueueFullError && err.seq === 5n);
    assert.equal(p.stats().nextSeq, 6n, 'the refused batch took seq 5');
    assert.equal(p.stats().dropped, 1);
    assert.equal(p.stats().queued, 5);
    await p.flush();
    assert.equal(p.stats().queued, 0);
    assert.equal(p.publish(batchOf(6)), 6n);
  });

  test('a batch refused by a full queue is a hole every subscriber sees and reports (history_missing)', async () => {
    const r = await rig({ config: { max_queue_size: 5 } });
    try {
      for (let i = 0; i < 5; i++) r.pub.publish(batchOf(i));
      assert.throws(() => r.pub.publish(batchOf(5)), QueueFullError);
      await r.pub.flush();
      r.pub.publish(batchOf(6));
      await r.got.waitForSeq(6n);
      assert.deepEqual(r.got.seqs(), [0n, 1n, 2n, 3n, 4n, 6n]);
      assert.deepEqual(r.got.notices(), [
        { notice: 'gap', expected: 5n, got: 6n },
        { notice: 'history_missing', reason: 'buffer_exceeded', from: 5n, resumedAt: 6n },
        { notice: 'replay', from: 5n, to: 6n, batches: 0 },
      ]);
      assert.equal(r.sub.health().trusted, false);
    } finally {
      await r.close();
    }
  });

  test('ipc endpoints; close flushes and removes the ipc files; publish after close throws', async () => {
    const ep = tmpIpc('pub');
    const rep = tmpIpc('rep');
    const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: ep, replay_endpoint: rep }) });
    assert.equal(p.endpoint, ep);
    const path = ep.slice('ipc://'.length);
    assert.ok(existsSync(path));
    const { sub, next } = await rawSubscriber(ep);
    for (let i = 0; i < 1000; i++) p.publish(batchOf(i));
    await p.close(2000);
    for (let i = 0; i < 1000; i++) assert.equal(decodeSeq((await next())[1]!), BigInt(i));
    await waitFor(() => !existsSync(path) && !existsSync(rep.slice(6)), 'ipc files removed', 2000);
    assert.throws(() => p.publish(batchOf(0)), PublisherClosedError);
    sub.close();
  });

  test('publisher "null" is disabled: numbers batches, opens nothing', async () => {
    const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ publisher: 'null' }) });
    assert.equal(p.endpoint, '');
    assert.equal(p.replayEndpoint, null);
    assert.equal(p.publish(batchOf(0)), 0n);
    await p.close();
  });
});

test('a port already taken: create() rejects naming the endpoint', async () => {
  const p = await publisher({});
  const port = p.endpoint.split(':').pop();
  await assert.rejects(
    KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: `tcp://*:${port}` }) }),
    (err: Error & { code?: string }) => /cannot bind tcp:\/\/\*:\d+: .*in use/i.test(err.message) && err.code === 'EADDRINUSE',
  );
});

/**
 * Malformed and hostile input on the event stream and on both sides of the replay socket,
 * and a burst of replay requests at one publisher: counted, skipped, no crash, memory bounded,
 * publishing goes on, and the router pipeline stays exact (or is explicitly untrusted).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import * as zmq from 'zeromq';
import { encodeBatch } from '../../src/events/codec.js';
import { encodeSeq } from '../../src/events/frames.js';
import { requestReplay } from '../../src/events/replay-client.js';
import { batchOf } from '../helpers/events.js';
import { sleep, waitFor } from '../helpers/net.js';
import { rawReplay } from '../helpers/raw.js';
import { FrameRelay } from '../helpers/relay.js';
import { drive, promptSet, SimWorker, stopAllSims } from './fleet.js';
import { checkSource, exact, markedUntrusted, type SourceCheck } from './invariant.js';
import { Pipeline, settleFault } from './pipeline.js';

let w: SimWorker;
let seed = 300;
const cleanups: Array<() => unknown> = [];
const rssMb = () => Math.round(process.memoryUsage().rss / 1e6);

function settled(fault: string | null, pipe: Pipeline, t0: number, want: (c: SourceCheck) => boolean): Promise<SourceCheck> {
  return settleFault(fault, () => checkSource(pipe.source, w.url, pipe.view), t0, want);
}

/**
 * Frames no publisher should send, all under the subscribed topic prefix (others never reach
 * the subscriber: ZeroMQ filters them): each must be counted as malformed and skipped.
 */
function hostileFrames(): Buffer[][] {
  const topic = Buffer.from('kv');
  const seq = encodeSeq(1n << 40n);
  const out: Buffer[][] = [
    [Buffer.concat([topic, randomBytes(5)])],
    [topic, seq],
    [topic, seq, Buffer.alloc(3), Buffer.alloc(3)],
    [topic, ...Array.from({ length: 50 }, () => randomBytes(3))],
    [topic, randomBytes(7), encodeBatch({ ts: 1, events: [], dp_rank: 0 })],
    [topic, Buffer.alloc(8, 0xff), encodeBatch({ ts: 1, events: [], dp_rank: 0 })], // the end marker, live
    [topic, seq, Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01])], // array32 of 4G elements
    [topic, seq, Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff])], // map32 of 4G entries
    [topic, seq, Buffer.from([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x41])], // str32 of 2G
    [topic, seq, Buffer.alloc(200_000, 0x91)], // 200k nested arrays
    [topic, seq, Buffer.concat([Buffer.from([0x93, 0xcb]), Buffer.alloc(8), Buffer.from([0x91]), Buffer.alloc(50_000, 0x81).map((b, i) => (i % 2 ? 0xa1 : b))])],
    [topic, seq, randomBytes(4 * 1024 * 1024)], // 4 MiB of noise
    [topic, seq, Buffer.from([0x93, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0x91, 0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa4, 0x4e, 0x6f, 0x70, 0x65, 0x00])], // unknown event tag
  ];
  for (let i = 0; i < 300; i++) out.push([topic, encodeSeq(BigInt(i)), randomBytes(1 + (i % 200))]);
  return out;
}

describe('hostile input and replay bursts', { timeout: 115_000 }, () => {
  before(async () => {
    w = await SimWorker.start('w', { numBlocks: 48 });
    await drive(w, promptSet(seed++, 4));
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(() => stopAllSims());

  test('malformed and hostile frames on the event stream: counted, skipped, memory bounded, tree exact', async () => {
    const relay = await FrameRelay.create(w.endpoint);
    const pipe = await Pipeline.start('hostile', relay.endpoint, w.replayEndpoint);
    cleanups.push(() => pipe.close(), () => relay.close());
    await relay.waitForSubscriber(10_000);
    await settled(null, pipe, Date.now(), exact);
    const rss0 = rssMb();
    const frames = hostileFrames();
    let injected = 0;
    for (let round = 0; round < 5; round++) {
      for (const f of frames) void relay.inject(f), injected++;
      await drive(w, promptSet(seed++, 2));
    }
    await relay.inject([Buffer.from('kv-done')]);
    injected++;
    await waitFor(() => pipe.feed.health().malformed >= injected, `${injected} malformed frames counted`, 20_000);
    const t0 = Date.now();
    const c = await settled('hostile frames', pipe, t0, exact);
    assert.ok(c.workerBlocks > 0);
    assert.equal(pipe.feed.health().malformed, injected);
    assert.equal(pipe.feed.health().historyMissing, 0);
    const grown = rssMb() - rss0;
    assert.ok(grown < 200, `RSS grew ${grown} MB`);
  });

  test('a forged but well-formed batch far ahead: announced (history_missing, reset) or rebuilt from a snapshot, then exact', async () => {
    const relay = await FrameRelay.create(w.endpoint);
    const pipe = await Pipeline.start('forged', relay.endpoint, w.replayEndpoint);
    cleanups.push(() => pipe.close(), () => relay.close());
    await relay.waitForSubscriber(10_000);
    await drive(w, promptSet(seed++, 1));
    await settled(null, pipe, Date.now(), exact);
    const seq = BigInt(pipe.feed.health().lastSeq ?? '0') + 1000n;
    await relay.inject(['kv', encodeSeq(seq), encodeBatch({ ts: Date.now() / 1000, events: batchOf(7), dp_rank: 0 })]);
    const t0 = Date.now();
    // The hole before it is announced (history_missing); the real stream then goes "back" past it,
    // which reads as a restart (reset): the subscriber replays the publisher from 0 and is exact again.
    // Our worker serves snapshots: the hole is rebuilt from one instead of announced as history_missing.
    await waitFor(() => pipe.feed.health().historyMissing + pipe.feed.health().snapshots > 0, 'history_missing or a snapshot', 10_000);
    const c = await settled('forged batch', pipe, t0, (x) => exact(x) && pipe.feed.health().resets + pipe.feed.health().snapshots > 0);
    console.log('forged:', JSON.stringify(pipe.feed.health()));
    assert.ok(c.routerBlocks > 0);
  });

  test("hostile requests at the worker's replay socket: ignored; publishing and good replays go on", async () => {
    const pipe = await Pipeline.start('replay-req', w.endpoint, w.replayEndpoint);
    cleanups.push(() => pipe.close());
    const d = new zmq.Dealer({ linger: 0, sendTimeout: 2000 });
    d.connect(w.replayEndpoint);
    cleanups.push(() => d.close());
    const bad: Array<Array<Buffer | string>> = [
      [randomBytes(8)],
      ['', randomBytes(7)],
      ['', encodeSeq(0n), 'extra'],
      ['x', encodeSeq(0n)],
      ['', Buffer.alloc(8, 0xff)],
      ['', randomBytes(1 << 20)],
    ];
    for (let i = 0; i < 400; i++) await d.send(bad[i % bad.length]!);
    await drive(w, promptSet(seed++, 3));
    const good = await rawReplay(w.replayEndpoint, ['', encodeSeq(0n)], 10_000);
    assert.ok(good.ended, 'a well-formed request is still answered');
    assert.ok(good.replies.length > 1);
    await settled('hostile replay requests', pipe, Date.now(), exact);
  });

  test('hostile replay replies (garbage, wrong frame counts, a runaway and a trickling endpoint): bounded, no crash', async () => {
    const evil = new zmq.Router({ linger: 0 });
    await evil.bind('tcp://127.0.0.1:0');
    cleanups.push(() => evil.close());
    let mode: 'garbage' | 'runaway' | 'trickle' = 'garbage';
    void (async () => {
      while (!evil.closed) {
        let req: Buffer[];
        try {
          req = await evil.receive();
        } catch {
          continue;
        }
        const id = req[0]!;
        const send = (frames: Array<Buffer | string>) => evil.send([id, ...frames]).catch(() => {});
        if (mode === 'garbage') {
          for (let i = 0; i < 200; i++) await send(i % 3 ? [randomBytes(i % 7)] : ['', 'kv', randomBytes(8), randomBytes(i)]);
          await send(['', '', Buffer.alloc(8, 0xff), 'not empty']); // a bogus end marker
        } else if (mode === 'runaway') {
          for (let i = 0; i < 5000 && !evil.closed; i++) await send(['', 'kv', encodeSeq(BigInt(i)), encodeBatch({ ts: i, events: [], dp_rank: 0 })]);
        } else {
          for (let i = 0; i < 100 && !evil.closed; i++, await sleep(50)) await send(['', 'kv', encodeSeq(BigInt(i)), randomBytes(4)]);
        }
      }
    })();
    const ep = evil.lastEndpoint!;
    const g = await requestReplay(ep, 0n, { timeoutMs: 1000 });
    assert.equal(g.status, 'timeout');
    assert.ok(g.malformed >= 200);
    mode = 'runaway';
    const r = await requestReplay(ep, 0n, { timeoutMs: 1000, maxReplies: 1000 });
    assert.equal(r.status, 'timeout', 'stops after maxReplies');
    assert.equal(r.batches.length, 1000);
    mode = 'trickle';
    const t0 = Date.now();
    const t = await requestReplay(ep, 0n, { timeoutMs: 1000, maxTotalMs: 1500 });
    assert.equal(t.status, 'timeout', 'stops at the total deadline');
    assert.ok(Date.now() - t0 < 3000);
    // And a router pipeline pointed at it: untrusted once it needs a replay, never wrong.
    mode = 'garbage';
    const relay = await FrameRelay.create(w.endpoint);
    const pipe = await Pipeline.start('evil-replay', relay.endpoint, ep);
    cleanups.push(() => pipe.close(), () => relay.close());
    await relay.waitForSubscriber(10_000);
    await drive(w, promptSet(seed++, 2));
    await settled('hostile replay replies', pipe, Date.now(), (c) => markedUntrusted(c) && pipe.feed.health().historyMissing > 0);
  });
});

/**
 * Faults around recovery itself, on a real sim worker: the subscriber's TCP link cut and
 * restored; the replay endpoint down, silent, or answering garbage while batches are lost.
 * Each ends exact (trusted, equal to GET /cache) or explicitly untrusted and cleared.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import * as zmq from 'zeromq';
import { FrameRelay } from '../helpers/relay.js';
import { freePort, sleep } from '../helpers/net.js';
import { ReplayProxy } from '../helpers/replay-proxy.js';
import { drive, promptSet, SimWorker, stopAllSims } from './fleet.js';
import { checkSource, exact, markedUntrusted, settle, type SourceCheck } from './invariant.js';
import { Pipeline, settleFault } from './pipeline.js';
import { TcpProxy } from './tcp-proxy.js';

let w: SimWorker;
let seed = 100;
const cleanups: Array<() => unknown> = [];

function settled(fault: string | null, pipe: Pipeline, t0: number, want: (c: SourceCheck) => boolean): Promise<SourceCheck> {
  return settleFault(fault, () => checkSource(pipe.source, w.url, pipe.view), t0, want);
}

/**
 * A pipeline fed through a FrameRelay (to lose batches) with the given replay endpoint,
 * made exact first: the worker's cache is flushed (AllBlocksCleared), so no replay is needed.
 */
async function relayed(source: string, replayEndpoint: string): Promise<{ relay: FrameRelay; pipe: Pipeline }> {
  const relay = await FrameRelay.create(w.endpoint);
  const pipe = await Pipeline.start(source, relay.endpoint, replayEndpoint);
  cleanups.push(() => pipe.close(), () => relay.close());
  await relay.waitForSubscriber(10_000);
  assert.equal(await w.flushCache(), 200);
  await drive(w, promptSet(seed++, 2), 1);
  await settle(() => checkSource(pipe.source, w.url, pipe.view), { want: exact });
  return { relay, pipe };
}

/** Untrusted and cleared because history was announced missing. */
const announcedMissing = (pipe: Pipeline) => (c: SourceCheck) => markedUntrusted(c) && pipe.feed.health().historyMissing > 0;

/** Traffic with some batches dropped in the middle, so that a later batch reveals the gap. */
async function lossyTraffic(relay: FrameRelay): Promise<void> {
  await drive(w, promptSet(seed++, 3), 1);
  relay.rule = (_s, i) => (i % 2 === 0 ? 'drop' : 'pass');
  await drive(w, promptSet(seed++, 6), 2);
  relay.rule = () => 'pass';
  await drive(w, promptSet(seed++, 2), 1);
}

describe('recovery faults on a sim worker', { timeout: 115_000 }, () => {
  before(async () => {
    w = await SimWorker.start('w', { numBlocks: 48 });
    await drive(w, promptSet(seed++, 4));
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(() => stopAllSims());

  test('subscriber disconnected (TCP link cut) while the worker runs, then back: it replays what it missed', async () => {
    const proxy = await TcpProxy.create(Number(w.endpoint.split(':').pop()));
    cleanups.push(() => proxy.close());
    const pipe = await Pipeline.start('cut', proxy.endpoint, w.replayEndpoint);
    cleanups.push(() => pipe.close());
    await settled(null, pipe, Date.now(), exact);
    const batchesBefore = pipe.feed.health().batches;
    proxy.cut();
    await drive(w, promptSet(seed++, 8));
    const t0 = Date.now();
    proxy.restore();
    const c = await settled('subscriber disconnected', pipe, t0, exact);
    assert.ok(c.workerBlocks > 0);
    assert.ok(pipe.feed.health().batches > batchesBefore, 'the batches published while cut were applied');
  });

  test('replay endpoint down: replay_timeout announced, source untrusted and cleared', async () => {
    const { relay, pipe } = await relayed('down', `tcp://127.0.0.1:${await freePort()}`);
    await lossyTraffic(relay);
    const c = await settled('replay endpoint down', pipe, Date.now(), announcedMissing(pipe));
    assert.equal(c.trusted, false);
    assert.ok(pipe.feed.health().historyMissing >= 1);
  });

  test('replay endpoint silent (accepts, never answers): same, within the replay timeout', async () => {
    const silent = new zmq.Router({ linger: 0 });
    await silent.bind('tcp://127.0.0.1:0');
    cleanups.push(() => silent.close());
    void (async () => {
      while (!silent.closed) await silent.receive().catch(() => sleep(10)); // swallow requests
    })();
    const { relay, pipe } = await relayed('silent', silent.lastEndpoint!);
    await lossyTraffic(relay);
    const c = await settled('replay endpoint silent', pipe, Date.now(), announcedMissing(pipe));
    assert.equal(c.trusted, false);
  });

  test('malformed replay replies: replay_malformed announced, source untrusted and cleared', async () => {
    const proxy = await ReplayProxy.create(w.replayEndpoint);
    cleanups.push(() => proxy.close());
    proxy.rule = (seq) => (seq === -1n ? 'pass' : 'corrupt');
    const { relay, pipe } = await relayed('garbage', proxy.endpoint);
    await lossyTraffic(relay);
    const c = await settled('malformed replay replies', pipe, Date.now(), announcedMissing(pipe));
    assert.equal(c.trusted, false);
    assert.ok(pipe.feed.health().malformed > 0);
  });

  test('after the faults, a fresh pipeline on the same worker is exact (the worker itself is fine)', async () => {
    const pipe = await Pipeline.start('fresh', w.endpoint, w.replayEndpoint);
    cleanups.push(() => pipe.close());
    await drive(w, promptSet(seed++, 2));
    await settled(null, pipe, Date.now(), exact);
  });
});

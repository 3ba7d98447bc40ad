/**
 * Batches lost, duplicated, reordered or delayed between a real sim worker's PUB and the
 * router's pipeline (StreamFeed → PrefixIndex), late join, and a gap larger than the
 * replay buffer. Each case ends with the tree equal to GET /cache (trusted), or explicitly
 * untrusted until the worker's cache is flushed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FrameRelay } from '../helpers/relay.js';
import { sleep } from '../helpers/net.js';
import { drive, promptSet, SimWorker, stopAllSims } from './fleet.js';
import { checkSource, exact, markedUntrusted, type SourceCheck } from './invariant.js';
import { Pipeline, settleFault } from './pipeline.js';

const BUFFER = 64;
let w: SimWorker;
let relay: FrameRelay | null = null;
let pipe: Pipeline | null = null;
let seed = 1;

const check = (): Promise<SourceCheck> => checkSource('w:0', w.url, pipe!.view);

async function connect(): Promise<void> {
  relay = await FrameRelay.create(w.endpoint);
  pipe = await Pipeline.start('w:0', relay.endpoint, w.replayEndpoint);
  await relay.waitForSubscriber(10_000);
}

/** Settles to `want`, records the figure, returns the check. */
function expectSettled(fault: string, t0: number, want: (c: SourceCheck) => boolean): Promise<SourceCheck> {
  return settleFault(fault, check, t0, want);
}

describe('stream loss between a sim worker and the router pipeline', { timeout: 115_000 }, () => {
  before(async () => {
    w = await SimWorker.start('w', { bufferSteps: BUFFER, numBlocks: 48 });
  });
  after(async () => {
    await pipe?.close();
    relay?.close();
    await stopAllSims();
  });

  test('late join: the pipeline starts after the worker has run; it replays from 0', async () => {
    await drive(w, promptSet(seed++, 6));
    const t0 = Date.now();
    await connect();
    const c = await expectSettled('late join', t0, exact);
    assert.ok(c.workerBlocks > 0);
  });

  test('dropped frames mid-stream are replayed', async () => {
    let dropped = 0;
    relay!.rule = (_seq, i) => (i % 3 === 1 ? (dropped++, 'drop') : 'pass');
    await drive(w, promptSet(seed++, 10));
    relay!.rule = () => 'pass';
    const t0 = Date.now();
    assert.ok(dropped > 0);
    await expectSettled('frames dropped', t0, exact);
    assert.ok(pipe!.feed.health().gaps > 0);
  });

  test('the tail of a burst lost (no later batch shows the gap): an idle probe finds it', async () => {
    const before = pipe!.feed.health().batches;
    relay!.rule = () => 'drop';
    await drive(w, promptSet(seed++, 2));
    await sleep(100);
    relay!.rule = () => 'pass';
    const t0 = Date.now();
    await expectSettled('tail lost', t0, exact);
    assert.ok(pipe!.feed.health().batches > before);
  });

  test('duplicated and reordered frames', async () => {
    relay!.rule = (_seq, i) => (i % 4 === 0 ? 'dup' : i % 5 === 2 ? 'hold' : 'pass');
    await drive(w, promptSet(seed++, 10));
    relay!.rule = () => 'pass';
    await relay!.release();
    const t0 = Date.now();
    await expectSettled('dup+reorder', t0, exact);
  });

  test('every frame delayed, then released late', async () => {
    relay!.rule = () => 'hold';
    await drive(w, promptSet(seed++, 4));
    await sleep(500);
    relay!.rule = () => 'pass';
    await relay!.release();
    const t0 = Date.now();
    await expectSettled('delay', t0, exact);
  });

  test('a gap larger than the replay buffer: history_missing, untrusted and cleared; a cache flush brings trust back', async () => {
    relay!.rule = () => 'drop';
    const seq0 = pipe!.feed.health().lastSeq;
    // Enough traffic to publish more than BUFFER batches (the relay counts them).
    const start = relay!.received;
    while (relay!.received - start < BUFFER + 16) await drive(w, promptSet(seed++, 8), 1);
    relay!.rule = () => 'pass';
    await drive(w, promptSet(seed++, 1));
    const t0 = Date.now();
    const c = await expectSettled('gap > replay buffer', t0, markedUntrusted);
    assert.equal(c.trusted, false);
    const h = pipe!.feed.health();
    assert.ok(h.historyMissing >= 1, `history_missing announced (${JSON.stringify(h)}, from ${seq0})`);
    assert.ok(h.treeClears >= 1);
    // The operator (or the engine) flushes: AllBlocksCleared makes the tree exact again.
    await waitOk(() => w.flushCache());
    const t1 = Date.now();
    await expectSettled('flush after history missing', t1, exact);
  });
});

async function waitOk(f: () => Promise<number>): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if ((await f()) === 200) return;
    await sleep(100);
  }
  throw new Error('flush_cache kept failing');
}

/**
 * Batches lost, duplicated, reordered or delayed between a real sim worker's PUB and the
 * router's pipeline (StreamFeed → PrefixIndex), late join, and a gap larger than the
 * replay buffer. Each case ends with the tree equal to GET /cache (trusted). A gap beyond the
 * buffer is recovered from the worker's snapshot without ever losing trust; without snapshots
 * (as with vLLM / SGLang) the tree is explicitly untrusted until the worker's cache is flushed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FrameRelay } from '../helpers/relay.js';
import { sleep } from '../helpers/net.js';
import { drive, promptSet, SimWorker, stopAllSims } from './fleet.js';
import { checkSource, exact, markedUntrusted, type SourceCheck } from './invariant.js';
import { Pipeline, settleFault } from './pipeline.js';
import { TcpProxy } from './tcp-proxy.js';

const BUFFER = 64;
let w: SimWorker;
let relay: FrameRelay | null = null;
/** In front of the worker's replay endpoint: cut while frames are dropped, so no idle probe fills the gap early. */
let replayProxy: TcpProxy | null = null;
let pipe: Pipeline | null = null;
let seed = 1;

const check = (): Promise<SourceCheck> => checkSource('w:0', w.url, pipe!.view);

async function connect(snapshots = true): Promise<void> {
  relay = await FrameRelay.create(w.endpoint);
  replayProxy ??= await TcpProxy.create(Number(w.replayEndpoint.split(':').at(-1)));
  pipe = await Pipeline.start('w:0', relay.endpoint, replayProxy.endpoint, 'kv', { snapshots });
  await relay.waitForSubscriber(10_000);
}

/** Samples the feed's trusted flag every few ms while `f` runs: how often it was seen false. */
async function watchTrust<T>(f: () => Promise<T>): Promise<{ result: T; untrustedSamples: number; samples: number }> {
  let untrustedSamples = 0;
  let samples = 0;
  const timer = setInterval(() => {
    samples++;
    if (!pipe!.feed.health().trusted) untrustedSamples++;
  }, 5);
  try {
    return { result: await f(), untrustedSamples, samples };
  } finally {
    clearInterval(timer);
  }
}

/** Drops every frame until more than BUFFER batches went by: the gap is older than the replay buffer. */
async function gapBeyondBuffer(): Promise<void> {
  relay!.rule = () => 'drop';
  replayProxy!.cut();
  const start = relay!.received;
  while (relay!.received - start < BUFFER + 16) await drive(w, promptSet(seed++, 8), 1);
  replayProxy!.restore();
  relay!.rule = () => 'pass';
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
    await replayProxy?.close();
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

  test('a gap larger than the replay buffer, under traffic: rebuilt from the worker snapshot, exact, never untrusted', async () => {
    const before = pipe!.feed.health();
    assert.equal(before.trusted, true);
    const { untrustedSamples, samples } = await watchTrust(async () => {
      await gapBeyondBuffer();
      // Traffic goes on while the router finds the gap and recovers.
      const traffic = drive(w, promptSet(seed++, 12), 2);
      await waitUntil(() => pipe!.feed.health().snapshots > before.snapshots, 30_000, () => `a snapshot applied: ${JSON.stringify(pipe!.feed.health())} ${pipe!.log.join('; ')}`);
      await traffic;
      const t0 = Date.now();
      await expectSettled('gap > replay buffer (snapshot)', t0, exact);
    });
    const h = pipe!.feed.health();
    assert.ok(samples > 0);
    assert.equal(untrustedSamples, 0, 'trusted at every sample');
    assert.equal(h.trustLosses, before.trustLosses, 'no trusted -> untrusted transition');
    assert.equal(h.historyMissing, before.historyMissing);
    assert.equal(h.treeClears, before.treeClears);
    assert.equal(h.snapshotFallbacks, 0);
    assert.ok(pipe!.log.some((l) => l.includes('rebuilt from the worker')), pipe!.log.join('\n'));
  });

  test('without snapshots (as with vLLM / SGLang) a gap beyond the buffer is history_missing, untrusted and cleared; a cache flush brings trust back', async () => {
    await pipe!.close();
    relay!.close();
    await connect(false);
    // A late join past the buffer without snapshots is untrusted: a flush makes it exact first.
    await expectSettled('late join without snapshots', Date.now(), markedUntrusted);
    await waitOk(() => w.flushCache());
    await expectSettled('flush before the gap', Date.now(), exact);
    const seq0 = pipe!.feed.health().lastSeq;
    await gapBeyondBuffer();
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

async function waitUntil(f: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await sleep(20);
  }
}

async function waitOk(f: () => Promise<number>): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if ((await f()) === 200) return;
    await sleep(100);
  }
  throw new Error('flush_cache kept failing');
}

/**
 * The KV-event stream of a real worker (sim engine, a small pool so blocks get evicted):
 * a subscriber following it from seq 0 ends with exactly the blocks GET /cache reports.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Subscriber } from 'zeromq';
import { decodeBatch } from '../../src/events/codec.js';
import { decodeSeq } from '../../src/events/frames.js';
import { KVEventSubscriber } from '../../src/events/subscriber.js';
import type { KVEventBatch } from '../../src/events/types.js';
import { pidAlive, startWorker, waitFor, type WorkerProc } from './helpers.js';

const base = join(tmpdir(), `kvt-${randomBytes(4).toString('hex')}`);
const PUB = `ipc://${base}-pub.sock`;
const REPLAY = `ipc://${base}-replay.sock`;
const DP_RANK = 1;
const BS = 4;

let w: WorkerProc;
let sub: Subscriber;
const liveBatches: { topic: string; seq: bigint; batch: KVEventBatch }[] = [];
const batches = liveBatches;
let lastArrival = 0;

before(async () => {
  w = await startWorker([
    '--engine', 'sim', '--block-size', String(BS), '--num-blocks', '40', '--max-batch', '6', '--decode-step-ms', '1',
    '--dp-rank', String(DP_RANK),
    '--kv-events-config', JSON.stringify({ endpoint: PUB, replay_endpoint: REPLAY, topic: 'kv' }),
  ]);
  sub = new Subscriber();
  sub.connect(`${PUB}_dp${DP_RANK}`); // the rank offset of an ipc endpoint
  sub.subscribe('kv');
  void (async () => {
    for await (const [topic, seq, payload] of sub) {
      batches.push({ topic: topic!.toString(), seq: decodeSeq(seq!), batch: decodeBatch(payload!) });
      lastArrival = Date.now();
    }
  })();
  await new Promise((r) => setTimeout(r, 300)); // PUB/SUB: let the subscription reach the publisher
});

after(async () => {
  sub?.close();
  await w?.stop('SIGKILL');
  for (const ep of [PUB, REPLAY]) rmSync(`${ep.slice(6)}_dp${DP_RANK}`, { force: true });
});

/** Replays the stream into hash → {parent, tokens}, checking it is self-consistent. */
function followStream(batches: { topic: string; seq: bigint; batch: KVEventBatch }[] = liveBatches) {
  const view = new Map<string, { parent_hash: string | null; token_ids: number[] }>();
  let unknownParents = 0;
  batches.forEach((b, i) => {
    assert.equal(b.seq, BigInt(i), 'seqs start at 0 and have no gaps');
    assert.equal(b.topic, 'kv');
    assert.equal(b.batch.dp_rank, DP_RANK);
    for (const e of b.batch.events) {
      if (e.type === 'AllBlocksCleared') view.clear();
      else if (e.type === 'BlockRemoved') {
        assert.equal(e.medium, 'GPU');
        for (const h of e.block_hashes) assert.ok(view.delete(String(h)), `removed unknown block ${h}`);
      } else {
        assert.equal(e.block_size, BS);
        assert.equal(e.medium, 'GPU');
        let parent = e.parent_block_hash === null ? null : String(e.parent_block_hash);
        if (parent !== null && !view.has(parent)) unknownParents++;
        e.block_hashes.forEach((h, k) => {
          assert.equal(typeof h, 'bigint');
          assert.ok((h as bigint) >= 0n && (h as bigint) < 2n ** 64n, 'unsigned 64-bit');
          view.set(String(h), { parent_hash: parent, token_ids: e.token_ids.slice(k * BS, (k + 1) * BS) });
          parent = String(h);
        });
      }
    }
  });
  assert.equal(unknownParents, 0, 'every stored block has a known parent');
  return view;
}

async function quiet(ms = 400) {
  await waitFor('the worker to go idle', async () => {
    const l = await w.json('/load');
    return l.running + l.waiting === 0;
  });
  await waitFor('the event stream to go quiet', async () => Date.now() - lastArrival > ms, 10_000);
}

let rng = 12345;
const rand = (n: number) => ((rng = (rng * 1103515245 + 12345) % 2 ** 31) % n);
const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('KV events of a running worker', () => {
  it('a subscriber from seq 0 ends with exactly the blocks GET /cache reports, after a workload with evictions', async () => {
    const roots = [ids(1000, 20), ids(2000, 16), ids(3000, 9), ids(4000, 30)];
    const jobs = Array.from({ length: 48 }, (_, i) => {
      const root = roots[rand(roots.length)]!;
      return { i, prompt: [...root.slice(0, 3 + rand(root.length - 2)), ...ids(10_000 + i * 50, rand(12))], max: 1 + rand(20) };
    });
    const runOne = async (j: (typeof jobs)[number]) => {
      if (j.i % 7 === 3) {
        // A client that goes away mid-stream.
        const ac = new AbortController();
        const r = await w.post('/v1/completions', { prompt: j.prompt, max_tokens: 60, stream: true }, { signal: ac.signal });
        const rd = r.body!.getReader();
        await rd.read();
        ac.abort();
        await rd.read().catch(() => undefined);
        return;
      }
      const r = await w.json('/v1/completions', { prompt: j.prompt, max_tokens: j.max, seed: j.i });
      assert.equal(r.usage.completion_tokens, j.max);
    };
    const queue = [...jobs];
    await Promise.all(Array.from({ length: 6 }, async () => {
      for (let j = queue.shift(); j; j = queue.shift()) await runOne(j);
    }));
    await quiet();

    const view = followStream();
    const cache: { hash: string; parent_hash: string | null; token_ids: number[]; medium: string }[] = await w.json('/cache');
    assert.ok(batches.some((b) => b.batch.events.some((e) => e.type === 'BlockRemoved')), 'the workload evicted blocks');
    assert.ok(cache.length > 0 && cache.length <= 40);
    assert.deepEqual(
      new Map(cache.map((b) => [b.hash, { parent_hash: b.parent_hash, token_ids: b.token_ids }])),
      view,
    );
    for (const b of cache) assert.equal(b.medium, 'GPU');
  });

  it('a late KVEventSubscriber replays from seq 0 and reaches the same blocks', async () => {
    const got: { topic: string; seq: bigint; batch: KVEventBatch }[] = [];
    const sub2 = new KVEventSubscriber({
      endpoint: `${PUB}_dp${DP_RANK}`,
      replayEndpoint: `${REPLAY}_dp${DP_RANK}`,
      topic: 'kv',
      fromSeq: 0n,
      onItem: (it) => {
        if (it.kind === 'batch') got.push({ topic: it.topic, seq: it.seq, batch: it.batch });
      },
    });
    await sub2.start();
    try {
      await waitFor('the replay to catch up', async () => got.length === liveBatches.length, 10_000);
      const cache: { hash: string; parent_hash: string | null; token_ids: number[] }[] = await w.json('/cache');
      assert.deepEqual(followStream(got), new Map(cache.map((b) => [b.hash, { parent_hash: b.parent_hash, token_ids: b.token_ids }])));
    } finally {
      await sub2.close();
    }
  });

  it('POST /flush_cache publishes AllBlocksCleared and empties GET /cache', async () => {
    const before = batches.length;
    assert.equal((await w.json('/flush_cache', {})).status, 'ok');
    await waitFor('the AllBlocksCleared batch', async () => batches.length > before);
    assert.deepEqual(batches.at(-1)!.batch.events, [{ type: 'AllBlocksCleared' }]);
    assert.deepEqual(await w.json('/cache'), []);
    assert.equal(followStream().size, 0);
    // The stream goes on from there.
    await w.json('/v1/completions', { prompt: ids(1, 13), max_tokens: 4 });
    await quiet(200);
    assert.equal(followStream().size, (await w.json('/cache')).length);
  });

  it('a crashed stage takes the whole worker down loudly', async () => {
    const kids = w.childPids();
    assert.equal(kids.length, 2);
    // The scheduler is the child that bound the PUB socket; either crash must stop everything.
    process.kill(kids[0]!, 'SIGKILL');
    const { code } = await w.exit;
    assert.notEqual(code, 0);
    assert.match(w.output, /\[kv-worker\] the (scheduler|detokenizer) process exited on SIGKILL; stopping the worker/);
    await waitFor('the other stage to exit', async () => kids.every((p) => !pidAlive(p)), 5000);
    assert.deepEqual(w.ipcFiles(), []);
  });
});

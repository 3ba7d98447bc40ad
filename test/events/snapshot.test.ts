/** The snapshot request over a real replay ROUTER socket: our publisher with and without a snapshot source. */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { parseKVEventsConfig } from '../../src/events/config.js';
import { chunkBlocks, KVEventPublisher, type CacheSnapshot } from '../../src/events/publisher.js';
import { requestSnapshot } from '../../src/events/snapshot.js';
import { connectAddressFor } from '../../src/events/config.js';
import type { BlockStored, KVEvent } from '../../src/events/types.js';

const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

async function publisher(snapshot: (() => Promise<CacheSnapshot>) | null): Promise<KVEventPublisher> {
  const p = await KVEventPublisher.create({ config: parseKVEventsConfig({ endpoint: 'tcp://127.0.0.1:0', replay_endpoint: 'tcp://127.0.0.1:0', topic: 'kv' }), dpRank: 1, snapshot });
  closers.push(() => p.close(100));
  return p;
}

/** One chain of n blocks of 2 tokens, hashes 1..n (some above 2^63), the first one salted. */
function chain(n: number): BlockStored {
  const hashes = Array.from({ length: n }, (_, i) => (i % 7 === 3 ? 2n ** 63n + BigInt(i) : BigInt(i + 1)));
  return {
    type: 'BlockStored',
    block_hashes: hashes,
    parent_block_hash: null,
    token_ids: Array.from({ length: 2 * n }, (_, i) => i),
    block_size: 2,
    lora_id: null,
    medium: 'GPU',
    lora_name: null,
    extra_keys: hashes.map((_, i) => (i === 0 ? ['salt'] : null)),
  };
}

/** Every block of a list of events as [hash, parent, tokens, extra]: what a tree would be built from. */
function blocks(events: KVEvent[]): string[] {
  const out: string[] = [];
  for (const ev of events) {
    if (ev.type !== 'BlockStored') continue;
    ev.block_hashes.forEach((h, i) => {
      const parent = i === 0 ? ev.parent_block_hash : ev.block_hashes[i - 1];
      const extra = (ev.extra_keys as unknown[] | undefined)?.[i] ?? null;
      out.push(JSON.stringify([String(h), String(parent), ev.token_ids.slice(i * ev.block_size, (i + 1) * ev.block_size), extra]));
    });
  }
  return out;
}

describe('snapshot requests', () => {
  test('our publisher with a source: the whole cache in chunks, tagged with the seq it is valid at', async () => {
    const events: KVEvent[] = [chain(1300), { ...chain(3), block_hashes: [9001n, 9002n, 9003n], parent_block_hash: 5n, extra_keys: undefined }];
    const p = await publisher(async () => ({ atSeq: 41n, events }));
    const r = await requestSnapshot(connectAddressFor(p.replayEndpoint!), { timeoutMs: 10_000 });
    assert.equal(r.status, 'done');
    if (r.status !== 'done') return;
    assert.equal(r.atSeq, 41n);
    assert.equal(r.batches.length, 3, '1303 blocks in chunks of 512');
    for (const b of r.batches) assert.equal(b.dp_rank, 1);
    assert.deepEqual(blocks(r.batches.flatMap((b) => b.events)), blocks(events));
    assert.equal(p.stats().snapshotsSent, 1);
  });

  test('an empty cache still says at which seq (one empty chunk, for its ts)', async () => {
    const p = await publisher(async () => ({ atSeq: 0n, events: [] }));
    const r = await requestSnapshot(connectAddressFor(p.replayEndpoint!), { timeoutMs: 10_000 });
    assert.equal(r.status, 'done');
    if (r.status === 'done') {
      assert.equal(r.atSeq, 0n);
      assert.deepEqual(r.batches.flatMap((b) => b.events), []);
    }
  });

  test('without a source: the bare end marker, read as unsupported (as from vLLM and SGLang); replays still work', async () => {
    const p = await publisher(null);
    p.publish([{ type: 'AllBlocksCleared' }]);
    await p.flush();
    const r = await requestSnapshot(connectAddressFor(p.replayEndpoint!), { timeoutMs: 10_000 });
    assert.equal(r.status, 'unsupported');
    assert.equal(p.stats().snapshotRequests, 1);
    assert.equal(p.stats().malformedReplayRequests, 0);
  });

  test('chunkBlocks keeps every block, in order, with its parent link and extra keys', () => {
    const ev = chain(10);
    const chunks = [...chunkBlocks([ev, { type: 'BlockRemoved', block_hashes: [1n], medium: null }], 4)];
    assert.deepEqual(chunks.map((c) => c.reduce((n, e) => n + (e.type === 'BlockStored' ? e.block_hashes.length : 1), 0)), [4, 4, 3]);
    assert.deepEqual(blocks(chunks.flat()), blocks([ev]));
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KVEvent } from '../../src/events/types.js';
import { BlockPool } from '../../worker/cache/block-pool.js';
import { blockExtraKeys, hashBlock, hashFullBlocks } from '../../worker/cache/hash.js';
import { decodeBatch, encodeBatch } from '../../src/events/codec.js';
import { PrefixIndex } from '../../src/index/index.js';
import { SimEngine } from '../../worker/engines/sim.js';
import type { GenerateRequest } from '../../worker/messages.js';
import { Scheduler } from '../../worker/scheduler/scheduler.js';

const BS = 4;
const toks = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

/** Registers `tokens`' full blocks as one sequence would; returns its block ids. */
function store(pool: BlockPool, tokens: number[]): number[] {
  const hashes = hashFullBlocks(tokens, BS);
  const ids = pool.allocate(hashes.length)!;
  hashes.forEach((h, k) => (ids[k] = pool.commit(ids[k]!, h, k ? hashes[k - 1]! : null, tokens.slice(k * BS, (k + 1) * BS))));
  return ids;
}

/** Applies events to a hash → parent map, as a subscriber would. */
function apply(view: Map<bigint, bigint | null>, events: KVEvent[]): void {
  for (const e of events) {
    if (e.type === 'AllBlocksCleared') view.clear();
    else if (e.type === 'BlockRemoved') for (const h of e.block_hashes) assert.ok(view.delete(h as bigint), 'removed an unknown block');
    else {
      let parent = e.parent_block_hash as bigint | null;
      assert.ok(parent === null || view.has(parent), 'stored a block whose parent is unknown');
      assert.equal(e.token_ids.length, e.block_hashes.length * e.block_size);
      for (const h of e.block_hashes) {
        view.set(h as bigint, parent);
        parent = h as bigint;
      }
    }
  }
}

const listAsMap = (pool: BlockPool) => new Map(pool.list().map((b) => [BigInt(b.hash), b.parent_hash === null ? null : BigInt(b.parent_hash)]));

describe('block hashes', () => {
  it('chain through the parent and are unsigned 64-bit', () => {
    const a = hashBlock(null, [1, 2, 3, 4]);
    assert.equal(hashBlock(null, [1, 2, 3, 4]), a);
    assert.notEqual(hashBlock(a, [1, 2, 3, 4]), a);
    assert.ok(a >= 0n && a < 2n ** 64n);
    assert.deepEqual(hashFullBlocks(toks(0, 9), BS), [hashBlock(null, toks(0, 4)), hashBlock(hashBlock(null, toks(0, 4)), toks(4, 4))]);
  });
});

describe('BlockPool', () => {
  it('stores full blocks once, as one chained BlockStored event', () => {
    const pool = new BlockPool(8, BS);
    const ids = store(pool, toks(0, 12));
    const events = pool.takeEvents();
    assert.equal(events.length, 1);
    const e = events[0]!;
    assert.equal(e.type, 'BlockStored');
    if (e.type !== 'BlockStored') return;
    assert.deepEqual(e.block_hashes, hashFullBlocks(toks(0, 12), BS));
    assert.equal(e.parent_block_hash, null);
    assert.deepEqual(e.token_ids, toks(0, 12));
    assert.equal(e.medium, 'GPU');
    assert.equal(e.block_size, BS);
    assert.deepEqual(ids.map((i) => pool.refCount(i)), [1, 1, 1]);
  });

  it('reuses a cached prefix with reference counts', () => {
    const pool = new BlockPool(8, BS);
    const a = store(pool, toks(0, 8));
    const matched = pool.match(hashFullBlocks([...toks(0, 8), 99, 98, 97, 96], BS));
    assert.deepEqual(matched, a);
    pool.acquire(matched);
    assert.deepEqual(a.map((i) => pool.refCount(i)), [2, 2]);
    pool.release(a);
    assert.equal(pool.available, 6, 'still referenced by the second holder');
    pool.release(matched);
    assert.equal(pool.available, 8, 'unreferenced cached blocks are evictable');
    assert.equal(pool.numCached, 2);
    assert.throws(() => pool.release([a[0]!]), /released more often/);
  });

  it('a duplicate block commits to the cached one', () => {
    const pool = new BlockPool(8, BS);
    const [x] = store(pool, toks(0, 4));
    pool.takeEvents();
    const [y] = pool.allocate(1)!;
    const got = pool.commit(y!, hashBlock(null, toks(0, 4)), null, toks(0, 4));
    assert.equal(got, x);
    assert.equal(pool.refCount(x!), 2);
    assert.equal(pool.refCount(y!), 0);
    assert.deepEqual(pool.takeEvents(), [], 'no second BlockStored');
  });

  it('evicts least recently used unreferenced blocks, tails before their prefixes', () => {
    const pool = new BlockPool(6, BS);
    const a = store(pool, toks(0, 12)); // a0 <- a1 <- a2
    const b = store(pool, toks(100, 8)); // b0 <- b1
    pool.release(a); // LRU: a2, a1, a0
    pool.release(b); // then b1, b0
    pool.takeEvents();
    const ah = hashFullBlocks(toks(0, 12), BS);
    const bh = hashFullBlocks(toks(100, 8), BS);
    // Touch a's first block: it becomes most recently used.
    const m = pool.match([ah[0]!]);
    pool.acquire(m);
    pool.release(m);
    assert.ok(pool.allocate(4));
    const ev = pool.takeEvents();
    // One free block first, then three evictions in LRU order.
    assert.deepEqual(ev, [{ type: 'BlockRemoved', block_hashes: [ah[2], ah[1], bh[1]], medium: 'GPU' }]);
    assert.equal(pool.numFree, 0);
    assert.equal(pool.available, 2);
    assert.equal(pool.allocate(3), null, 'cannot allocate beyond the pool');
    assert.ok(pool.canAllocate(2));
    assert.ok(!pool.canAllocate(2, m), 'a matched evictable block is no longer available');
  });

  it('clear() empties an idle pool and queues AllBlocksCleared', () => {
    const pool = new BlockPool(4, BS);
    const a = store(pool, toks(0, 8));
    assert.equal(pool.clear(), false, 'referenced blocks block a flush');
    pool.release(a);
    pool.takeEvents();
    assert.equal(pool.clear(), true);
    assert.deepEqual(pool.takeEvents(), [{ type: 'AllBlocksCleared' }]);
    assert.deepEqual(pool.list(), []);
    assert.equal(pool.available, 4);
  });
});

function makeScheduler(numBlocks: number, maxBatch = 4) {
  const events: KVEvent[][] = [];
  const engine = new SimEngine({ blockSize: BS, numBlocks, eosTokenIds: [0], vocabSize: 1000, prefillTokensPerS: 1e9, decodeStepMs: 0 });
  const s = new Scheduler({ engine, maxBatch, publish: (e) => events.push(e) });
  return { s, events, engine };
}

const req = (rid: string, promptIds: number[], maxTokens: number): GenerateRequest => ({
  rid, promptIds, maxTokens, sampling: { temperature: 0, topP: 1, seed: 1 }, ignoreEos: false, stop: [],
});

async function runToEnd(s: Scheduler) {
  const outs = new Map<string, { ids: number[]; cached: number; finish: string | null }>();
  for (let i = 0; i < 10_000 && !s.idle; i++) {
    for (const o of await s.step()) {
      const r = outs.get(o.rid) ?? { ids: [], cached: -1, finish: null };
      if (o.start) r.cached = o.start.cachedTokens;
      r.ids.push(...o.ids);
      r.finish = o.finish;
      outs.set(o.rid, r);
    }
  }
  assert.ok(s.idle, 'scheduler did not drain');
  return outs;
}

describe('cache_salt (vLLM: the salt enters the first block only, via its extra keys)', () => {
  /** Registers a salted sequence as the scheduler must: salt in block 0's hash and extra keys. */
  function storeSalted(pool: BlockPool, tokens: number[], salt: string | null): bigint[] {
    const hashes = hashFullBlocks(tokens, BS, Infinity, salt);
    const ids = pool.allocate(hashes.length)!;
    hashes.forEach((h, k) => pool.commit(ids[k]!, h, k ? hashes[k - 1]! : null, tokens.slice(k * BS, (k + 1) * BS), blockExtraKeys(k, salt)));
    return hashes;
  }

  it('a salt changes the first block hash and, through the chain, every later one', () => {
    const t = toks(0, 12);
    const plain = hashFullBlocks(t, BS);
    const a = hashFullBlocks(t, BS, Infinity, 'tenant-a');
    const b = hashFullBlocks(t, BS, Infinity, 'tenant-b');
    assert.deepEqual(hashFullBlocks(t, BS, Infinity, 'tenant-a'), a, 'deterministic');
    for (let k = 0; k < 3; k++) {
      assert.notEqual(a[k], plain[k]);
      assert.notEqual(a[k], b[k]);
    }
    assert.equal(a[1], hashBlock(a[0]!, t.slice(4, 8)), 'later blocks take no salt of their own');
    assert.notEqual(hashBlock(null, t.slice(0, 4), ''), plain[0], 'an empty salt is still a salt');
    assert.deepEqual([blockExtraKeys(0, 's'), blockExtraKeys(1, 's'), blockExtraKeys(0, null)], [['s'], null, null]);
  });

  it('publishes the salt in extra_keys (one entry per block, vLLM shape) and in GET /cache; a salted chain never matches another', () => {
    const pool = new BlockPool(16, BS);
    const t = toks(0, 12);
    storeSalted(pool, t, null);
    const salted = storeSalted(pool, t, 'tenant-a');
    const events = pool.takeEvents();
    assert.equal(events.length, 2);
    const [plainEv, saltEv] = events;
    assert.ok(plainEv!.type === 'BlockStored' && saltEv!.type === 'BlockStored');
    assert.equal(plainEv.extra_keys, undefined, 'no extra keys: the field is left at its default');
    assert.deepEqual(saltEv.extra_keys, [['tenant-a'], null, null]);
    assert.deepEqual(pool.list().find((b) => BigInt(b.hash) === salted[0])?.extra_keys, [['tenant-a']]);
    assert.equal(pool.list().find((b) => BigInt(b.hash) === salted[1])?.extra_keys, undefined);
    // through the wire codec into the router's index
    const wire = decodeBatch(encodeBatch({ ts: 0, events, dp_rank: 0 }));
    const ix = new PrefixIndex();
    ix.addSource('w');
    ix.applyBatch('w', wire);
    assert.equal(ix.stats('w').invalid, 0);
    assert.equal(ix.match(t).get('w')?.matchedTokens, 12);
    assert.equal(ix.match(t, { salt: 'tenant-a' }).get('w')?.matchedTokens, 12);
    assert.equal(ix.match(t, { salt: 'tenant-b' }).get('w')?.matchedTokens, 0);
  });

  it('a salted block that straddles an event boundary still gets aligned extra_keys', () => {
    const pool = new BlockPool(16, BS);
    const t = toks(100, 8);
    const h = hashFullBlocks(t, BS, Infinity, 's');
    const ids = pool.allocate(2)!;
    pool.commit(ids[0]!, h[0]!, null, t.slice(0, 4), blockExtraKeys(0, 's'));
    const first = pool.takeEvents();
    pool.commit(ids[1]!, h[1]!, h[0]!, t.slice(4, 8), blockExtraKeys(1, 's'));
    const second = pool.takeEvents();
    assert.deepEqual((first[0] as { extra_keys?: unknown }).extra_keys, [['s']]);
    assert.equal((second[0] as { extra_keys?: unknown }).extra_keys, undefined);
    // blocks merged into one event: entries stay aligned with block_hashes, null where a block has none
    const p2 = new BlockPool(16, BS);
    const ids2 = p2.allocate(2)!;
    p2.commit(ids2[0]!, 1n, null, t.slice(0, 4));
    p2.commit(ids2[1]!, 2n, 1n, t.slice(4, 8), ['x']);
    assert.deepEqual((p2.takeEvents()[0] as { extra_keys?: unknown }).extra_keys, [null, ['x']]);
  });
});

describe('Scheduler over the pool', () => {
  it('reports cached tokens for a repeated prompt and generates the same tokens', async () => {
    const { s, events } = makeScheduler(32);
    s.add(req('a', toks(1, 10), 5));
    const first = await runToEnd(s);
    s.add(req('b', toks(1, 10), 5));
    const second = await runToEnd(s);
    assert.equal(first.get('a')!.cached, 0);
    assert.equal(second.get('b')!.cached, 8, 'two full blocks of the 10-token prompt');
    assert.deepEqual(second.get('b')!.ids, first.get('a')!.ids);
    assert.equal(first.get('a')!.finish, 'length');
    // Prompt (10) + generated-and-computed (4) = 14 tokens: 3 full blocks stored.
    const view = new Map<bigint, bigint | null>();
    for (const e of events) apply(view, e);
    assert.deepEqual(view, listAsMap(s.pool));
    assert.equal(view.size, 3);
  });

  it('a fully cached prompt still computes its last token', async () => {
    const { s } = makeScheduler(32);
    s.add(req('a', toks(1, 8), 2));
    await runToEnd(s);
    s.add(req('b', toks(1, 8), 2));
    const out = await runToEnd(s);
    assert.equal(out.get('b')!.cached, 4);
  });

  it('waits when the pool is full, preempts when decodes run out of blocks, and events always match the cache', async () => {
    const { s, events } = makeScheduler(12, 8);
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    const prefixes = [toks(1, 8), toks(500, 12), toks(900, 4)];
    for (let i = 0; i < 60; i++) {
      const p = prefixes[rand(3)]!;
      s.add(req(`r${i}`, [...p.slice(0, 4 + rand(p.length - 3)), ...toks(2000 + i * 10, rand(6))], 1 + rand(12)));
      if (rand(3) === 0) await s.step();
      if (i === 30) s.abort('r29');
    }
    const outs = await runToEnd(s);
    assert.ok(s.stats.preemptions > 0, 'the workload should force preemptions');
    for (const [rid, o] of outs) if (o.finish !== 'abort') assert.equal(o.finish, 'length', rid);
    const view = new Map<bigint, bigint | null>();
    for (const e of events) apply(view, e);
    assert.deepEqual(view, listAsMap(s.pool));
    assert.ok(events.flat().some((e) => e.type === 'BlockRemoved'), 'evictions happened');
    assert.equal(s.pool.available, 12, 'every block is released');
    assert.deepEqual(s.flush(), { ok: true, message: 'cache flushed' });
    apply(view, events.at(-1)!);
    assert.equal(view.size, 0);
  });

  it('an abort frees the request blocks; flush refuses while requests run', async () => {
    const { s } = makeScheduler(16);
    s.add(req('a', toks(1, 10), 50));
    await s.step();
    assert.equal(s.load().running, 1);
    assert.equal(s.flush().ok, false);
    assert.equal(s.abort('a')!.finish, 'abort');
    assert.equal(s.abort('a'), null);
    assert.equal(s.pool.available, 16);
    assert.equal(s.load().running, 0);
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import type { KVEvent } from '../../src/events/types.js';
import { batch, prng, randInt, removed, stored } from './helpers.js';

const BS = 16;
const FAMILIES = 20; // documents in a family share their first `shared` blocks
const DOCS = 400;
const DOC_BLOCKS = 48;
const CAPACITY = 1500; // blocks per source before it evicts

test('long random churn: live nodes always equal what the sources hold, and nothing is left after', () => {
  const rnd = prng(42);
  let now = 0;
  const ix = new PrefixIndex({ provisionalTtlMs: 50, now: () => now });
  const family = (d: number): number => d % FAMILIES;
  const shared = (f: number): number => 4 + (f % 12);
  /** Identity of block b of document d: shared blocks are the family's. */
  const blockId = (d: number, b: number): string => (b < shared(family(d)) ? `f${family(d)}:${b}` : `d${d}:${b}`);
  const hashOf = new Map<string, bigint>();
  const engineHash = (id: string): bigint => {
    let h = hashOf.get(id);
    if (h === undefined) hashOf.set(id, (h = BigInt.asIntN(64, BigInt(randInt(rnd, 2 ** 30)) << 34n) ^ BigInt(hashOf.size)));
    return h;
  };
  const tokenCache = new Map<string, number[]>();
  const tokens = (id: string): number[] => {
    let t = tokenCache.get(id);
    if (t === undefined) tokenCache.set(id, (t = Array.from({ length: BS }, () => randInt(rnd, 50_000))));
    return t;
  };

  const sources = Array.from({ length: 8 }, (_, i) => `w${i}:0`);
  /** per source: held block ids (insertion order = LRU order), with their document position */
  const held = new Map<string, Map<string, true>>(sources.map((s) => [s, new Map()]));
  for (const s of sources) ix.addSource(s);
  const minBytes = ix.storeBytes();
  let compactions = 0;
  let lastBytes = minBytes;
  let peak = 0;
  let blockEvents = 0;

  for (let step = 0; step < 6000; step++) {
    const s = sources[randInt(rnd, sources.length)];
    const h = held.get(s)!;
    const r = rnd();
    const events: KVEvent[] = [];
    if (r < 0.004) {
      events.push({ type: 'AllBlocksCleared' });
      h.clear();
    } else if (r < 0.006) {
      ix.clearSource(s);
      h.clear();
    } else {
      // store a document prefix: the part already held is skipped, the rest chained in one event
      const d = randInt(rnd, DOCS);
      const len = 1 + randInt(rnd, DOC_BLOCKS);
      let start = 0;
      while (start < len && h.has(blockId(d, start))) start++;
      // up to the next block already held: this engine stores one copy per hash (copies are counted)
      let end = start;
      while (end < len && !h.has(blockId(d, end))) end++;
      if (start < end) {
        const ids = Array.from({ length: end - start }, (_, i) => blockId(d, start + i));
        events.push(stored(ids.map(engineHash), start === 0 ? null : engineHash(blockId(d, start - 1)), ids.flatMap(tokens), BS));
        for (const id of ids) h.set(id, true);
        blockEvents += ids.length;
      }
      // evict the oldest blocks beyond capacity (any order: holes are allowed)
      const over = h.size - CAPACITY;
      if (over > 0) {
        const victims = [...h.keys()].slice(0, over);
        events.push(removed(victims.map(engineHash)));
        for (const id of victims) h.delete(id);
        blockEvents += victims.length;
      }
    }
    ix.applyBatch(s, batch(...events));
    if (rnd() < 0.05) {
      // provisional marks on a fresh document expire on their own
      ix.markProvisional(s, Array.from({ length: BS * 4 }, () => 60_000 + randInt(rnd, 1000)), BS);
    }
    now += randInt(rnd, 5);
    if (ix.storeBytes() < lastBytes) compactions++;
    lastBytes = ix.storeBytes();
    if (step % 200 === 0 || step === 5999) {
      now += 100; // let every provisional mark expire before counting
      const union = new Set<string>();
      for (const [src, set] of held) {
        assert.equal(ix.stats(src).blocks, set.size, `step ${step} ${src}`);
        assert.equal(ix.stats(src).provisionalBlocks, 0);
        for (const id of set.keys()) union.add(id); // an id is one node: same tokens, same chain
      }
      assert.equal(ix.totalNodes(), union.size, `step ${step}`);
      // records move when the store compacts: matches must still find every held chain
      for (let q = 0; q < 20; q++) {
        const d = randInt(rnd, DOCS);
        const m = ix.match(Array.from({ length: DOC_BLOCKS }, (_, b) => tokens(blockId(d, b))).flat());
        for (const [src, set] of held) {
          let lead = 0;
          while (lead < DOC_BLOCKS && set.has(blockId(d, lead))) lead++;
          assert.equal(m.get(src)?.matchedTokens, lead * BS, `step ${step} doc ${d} ${src}`);
        }
      }
      peak = Math.max(peak, union.size);
    }
  }
  assert.ok(blockEvents > 150_000, `block events: ${blockEvents}`);
  for (const s of sources) ix.removeSource(s);
  assert.equal(ix.totalNodes(), 0);
  assert.deepEqual(ix.sources(), []);
  assert.ok(compactions > 0, 'clears shrank the store during the run');
  assert.equal(ix.storeBytes(), minBytes, 'an empty index gives its memory back');
  // the shared store never grew past twice the peak (slots are reused, not leaked)
  const cap = (ix as unknown as { nodes: { cap: number } }).nodes.cap;
  assert.ok(cap <= 2 * Math.max(1024, 2 ** Math.ceil(Math.log2(peak * 1.2))), `cap ${cap} peak ${peak}`);
});

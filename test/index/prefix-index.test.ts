import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex, type SourceMatch } from '../../src/index/index.js';
import { batch, range, removed, stored } from './helpers.js';

const A = 'w0:0';
const B = 'w1:0';

function matched(ix: PrefixIndex, tokens: number[], lora?: string | number | null): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [s, m] of ix.match(tokens, { lora })) out[s] = m.matchedTokens;
  return out;
}

test('BlockStored at the root and chained in one event: matched prefix per full block', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([10n, 11n, 12n], null, range(0, 12), 4)));
  assert.deepEqual(matched(ix, range(0, 12)), { [A]: 12 });
  assert.deepEqual(matched(ix, range(0, 11)), { [A]: 8 }, 'a partial block never matches');
  assert.deepEqual(matched(ix, [...range(0, 6), 99, ...range(7, 12)]), { [A]: 4 });
  assert.deepEqual(matched(ix, [1, 2, 3, 4]), { [A]: 0 });
  assert.deepEqual(matched(ix, []), { [A]: 0 });
  assert.deepEqual(ix.stats(A), {
    blocks: 3, copies: { GPU: 3 }, nodes: 3, unknownParent: 0, unknownRemoval: 0, invalid: 0, provisionalBlocks: 0, blockSize: 4,
  });
});

test('parent_block_hash chains across events; an unknown parent is counted and the event skipped', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4), stored([2n, 3n], 1n, range(4, 12), 4)));
  assert.deepEqual(matched(ix, range(0, 12)), { [A]: 12 });
  ix.applyBatch(A, batch(stored([5n], 4n, range(12, 16), 4)));
  assert.equal(ix.stats(A).unknownParent, 1);
  assert.equal(ix.stats(A).blocks, 3);
  assert.deepEqual(matched(ix, range(0, 16)), { [A]: 12 });
  // A child of the skipped block is unknown too.
  ix.applyBatch(A, batch(stored([6n], 5n, range(16, 20), 4)));
  assert.equal(ix.stats(A).unknownParent, 2);
  assert.equal(ix.totalNodes(), 3);
});

test('BlockRemoved frees the block; the match stops at the hole; unknown removals are counted and ignored', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n, 2n, 3n], null, range(0, 12), 4)));
  ix.applyBatch(A, batch(removed([2n])));
  assert.deepEqual(matched(ix, range(0, 12)), { [A]: 4 });
  assert.equal(ix.stats(A).blocks, 2);
  assert.equal(ix.totalNodes(), 2);
  ix.applyBatch(A, batch(removed([2n, 77n]), removed([1n], 'CPU')));
  assert.equal(ix.stats(A).unknownRemoval, 3, 'already removed, never stored, wrong medium');
  assert.equal(ix.stats(A).blocks, 2);
  ix.applyBatch(A, batch(removed([1n, 3n], 'GPU')));
  assert.deepEqual(matched(ix, range(0, 12)), { [A]: 0 });
  assert.equal(ix.totalNodes(), 0);
});

test('AllBlocksCleared empties that source only', () => {
  const ix = new PrefixIndex();
  for (const s of [A, B]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n, 2n], null, range(0, 8), 4)));
  ix.applyBatch(B, batch(stored([1n, 2n], null, range(0, 8), 4)));
  assert.equal(ix.totalNodes(), 2, 'the same tokens on two sources share nodes');
  ix.applyBatch(A, batch({ type: 'AllBlocksCleared' }));
  assert.deepEqual(matched(ix, range(0, 8)), { [A]: 0, [B]: 8 });
  assert.equal(ix.stats(A).blocks, 0);
  assert.equal(ix.stats(A).blockSize, 4);
  assert.equal(ix.totalNodes(), 2);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4)));
  assert.deepEqual(matched(ix, range(0, 8)), { [A]: 4, [B]: 8 });
});

test('hashes above 2^63, negative hashes and bytes hashes', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  const big = 2n ** 64n - 1n;
  const above = 2n ** 63n + 12345n;
  const neg = -(2n ** 63n);
  const bytes = (fill: number): Uint8Array => new Uint8Array(32).fill(fill);
  ix.applyBatch(A, batch(
    stored([big], null, range(0, 4), 4),
    stored([above], big, range(4, 8), 4),
    stored([neg, -2n], above, range(8, 16), 4),
    stored([bytes(7)], -2n, range(16, 20), 4),
    // parent given as another Uint8Array with the same bytes
    stored([bytes(8), Uint8Array.from([1, 2, 3])], bytes(7), range(20, 28), 4),
  ));
  assert.equal(ix.stats(A).unknownParent, 0);
  assert.deepEqual(matched(ix, range(0, 28)), { [A]: 28 });
  ix.applyBatch(A, batch(removed([above])));
  assert.deepEqual(matched(ix, range(0, 28)), { [A]: 4 });
  ix.applyBatch(A, batch(removed([Uint8Array.from([1, 2, 3]), bytes(9)])));
  assert.equal(ix.stats(A).unknownRemoval, 1);
  assert.equal(ix.stats(A).blocks, 5);
  ix.applyBatch(A, batch(removed([big, neg, -2n, bytes(7), bytes(8)])));
  assert.equal(ix.stats(A).blocks, 0);
  assert.equal(ix.totalNodes(), 0);
});

test('an engine hash is its 64 bits: the signed and unsigned spellings are one hash', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([-1n], null, range(0, 4), 4), stored([7n], 2n ** 64n - 1n, range(4, 8), 4)));
  assert.deepEqual(matched(ix, range(0, 8)), { [A]: 8 });
  ix.applyBatch(A, batch(removed([2n ** 64n - 1n])));
  assert.deepEqual(matched(ix, range(0, 8)), { [A]: 0 });
  assert.equal(ix.stats(A).blocks, 1);
});

test('sources with different block sizes are cut by their own block size', () => {
  const ix = new PrefixIndex();
  for (const s of [A, B, 'w2:0']) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n, 2n, 3n], null, range(0, 12), 4)));
  ix.applyBatch(B, batch(stored([1n], null, range(0, 8), 8)));
  ix.applyBatch('w2:0', batch(stored([1n], null, range(100, 108), 8)));
  assert.deepEqual(matched(ix, range(0, 15)), { [A]: 12, [B]: 8, 'w2:0': 0 });
  assert.deepEqual(matched(ix, range(0, 7)), { [A]: 4, [B]: 0, 'w2:0': 0 });
  assert.equal(ix.totalNodes(), 5);
});

test('LoRA: name, else id, keeps adapters apart', () => {
  const ix = new PrefixIndex();
  for (const s of [A, B, 'base']) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4, { lora_name: 'sql', lora_id: 3 })));
  ix.applyBatch(B, batch(stored([1n], null, range(0, 4), 4, { lora_id: 3 })));
  ix.applyBatch('base', batch(stored([1n], null, range(0, 4), 4)));
  assert.deepEqual(matched(ix, range(0, 4)), { [A]: 0, [B]: 0, base: 4 });
  assert.deepEqual(matched(ix, range(0, 4), 'sql'), { [A]: 4, [B]: 0, base: 0 });
  assert.deepEqual(matched(ix, range(0, 4), 3), { [A]: 0, [B]: 4, base: 0 });
  assert.deepEqual(matched(ix, range(0, 4), '3'), { [A]: 0, [B]: 0, base: 0 });
  assert.equal(ix.totalNodes(), 3);
});

test('medium: null is GPU, slower tiers count at their tier, fastest tier wins, tiers split the match', () => {
  const ix = new PrefixIndex();
  for (const s of [A, B]) ix.addSource(s);
  ix.applyBatch(A, batch(
    stored([1n, 2n], null, range(0, 8), 4),
    stored([3n, 4n], 2n, range(8, 16), 4, { medium: 'CPU' }),
    stored([2n], 1n, range(4, 8), 4, { medium: 'CPU' }),
    stored([5n], 4n, range(16, 20), 4, { medium: 'DISK' }),
  ));
  const m = ix.match(range(0, 20)).get(A) as SourceMatch;
  assert.deepEqual(m, { matchedTokens: 20, byMedium: { GPU: 8, CPU: 8, DISK: 4 } });
  ix.applyBatch(A, batch(removed([2n], 'GPU')));
  assert.deepEqual(ix.match(range(0, 20)).get(A), { matchedTokens: 20, byMedium: { GPU: 4, CPU: 12, DISK: 4 } });
  assert.equal(ix.stats(A).blocks, 5);
  ix.applyBatch(A, batch(removed([2n], 'CPU')));
  assert.deepEqual(ix.match(range(0, 20)).get(A), { matchedTokens: 4, byMedium: { GPU: 4 } });
  assert.equal(ix.stats(A).blocks, 4);
  assert.equal(ix.stats(A).nodes, 4);
  // CPU-only source vs GPU source on the same prompt
  ix.applyBatch(B, batch(stored([9n], null, range(0, 4), 4, { medium: 'CPU' })));
  assert.deepEqual(ix.match(range(0, 4)).get(B), { matchedTokens: 4, byMedium: { CPU: 4 } });
});

test('provisional marks count until the TTL, are superseded by real events, and expire', () => {
  let now = 1000;
  const ix = new PrefixIndex({ provisionalTtlMs: 500, now: () => now });
  for (const s of [A, B]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4)));
  ix.markProvisional(A, range(0, 14), 4);
  ix.markProvisional(B, range(0, 8), 4);
  assert.deepEqual(ix.match(range(0, 16)).get(A), { matchedTokens: 12, byMedium: { GPU: 4, provisional: 8 } });
  assert.deepEqual(ix.match(range(0, 16)).get(B), { matchedTokens: 8, byMedium: { provisional: 8 } });
  assert.equal(ix.stats(A).provisionalBlocks, 2, 'the block held for real is not marked');
  assert.equal(ix.stats(B).blockSize, 4);
  assert.equal(ix.totalNodes(), 3);
  // a real store supersedes the mark
  ix.applyBatch(A, batch(stored([2n], 1n, range(4, 8), 4)));
  assert.equal(ix.stats(A).provisionalBlocks, 1);
  assert.deepEqual(ix.match(range(0, 16)).get(A), { matchedTokens: 12, byMedium: { GPU: 8, provisional: 4 } });
  // a renewed mark outlives the first expiry
  now = 1300;
  ix.markProvisional(B, range(0, 4), 4);
  now = 1500;
  assert.deepEqual(ix.match(range(0, 16)).get(A), { matchedTokens: 8, byMedium: { GPU: 8 } });
  assert.deepEqual(ix.match(range(0, 16)).get(B), { matchedTokens: 4, byMedium: { provisional: 4 } });
  assert.equal(ix.stats(A).provisionalBlocks, 0);
  now = 1800;
  assert.equal(ix.stats(B).provisionalBlocks, 0);
  assert.equal(ix.totalNodes(), 2);
  // a real removal after supersession leaves nothing behind
  ix.applyBatch(A, batch(removed([2n])));
  assert.deepEqual(ix.match(range(0, 16)).get(A), { matchedTokens: 4, byMedium: { GPU: 4 } });
});

test('provisional marks use the source block size once known, and clear with the source', () => {
  const ix = new PrefixIndex();
  for (const s of [A, B]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 8), 8)));
  ix.markProvisional(A, range(0, 20), 4);
  assert.equal(ix.stats(A).provisionalBlocks, 1, 'cut by 8, the first block already held');
  assert.equal(ix.match(range(0, 20)).get(A)?.matchedTokens, 16);
  ix.markProvisional(B, range(0, 8), 4, 'sql');
  assert.equal(ix.match(range(0, 8)).get(B)?.matchedTokens, 0);
  assert.equal(ix.match(range(0, 8), { lora: 'sql' }).get(B)?.matchedTokens, 8);
  ix.applyBatch(B, batch({ type: 'AllBlocksCleared' }));
  assert.equal(ix.stats(B).provisionalBlocks, 0);
  ix.clearSource(A);
  assert.equal(ix.stats(A).blockSize, null);
  assert.equal(ix.totalNodes(), 0);
});

test('markProvisional rejects a block size that is not a positive integer', () => {
  const ix = new PrefixIndex();
  assert.throws(() => ix.markProvisional(A, range(0, 8), 0), RangeError);
  assert.throws(() => ix.markProvisional(A, range(0, 8), 2.5), RangeError);
  assert.deepEqual(ix.sources(), []);
});

test('the default clock is monotonic and marks count right away', () => {
  const ix = new PrefixIndex({ provisionalTtlMs: 60_000 });
  for (const s of [A]) ix.addSource(s);
  ix.markProvisional(A, range(0, 8), 4);
  assert.equal(ix.match(range(0, 8)).get(A)?.matchedTokens, 8);
});

test('a first real store with another block size replaces provisional marks and sets the size', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.markProvisional(A, range(0, 8), 4);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 8), 8)));
  assert.equal(ix.stats(A).blockSize, 8);
  assert.equal(ix.stats(A).provisionalBlocks, 0);
  assert.equal(ix.totalNodes(), 1);
  // while it holds blocks, another size is invalid
  ix.applyBatch(A, batch(stored([2n], null, range(0, 4), 4)));
  assert.equal(ix.stats(A).invalid, 1);
  assert.equal(ix.stats(A).blocks, 1);
});

test('malformed stores are counted as invalid and skipped', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.applyBatch(A, batch(
    stored([1n, 2n], null, range(0, 7), 4),
    stored([1n], null, range(0, 4), 0),
    stored([], null, [], 4),
  ));
  assert.equal(ix.stats(A).invalid, 2);
  assert.equal(ix.stats(A).blocks, 0);
  assert.equal(ix.totalNodes(), 0);
});

test('storing the same hash twice is two copies (vLLM does not de-duplicate); two hashes with the same tokens share one node', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4), stored([1n], null, range(0, 4), 4)));
  assert.equal(ix.stats(A).blocks, 1);
  assert.deepEqual(ix.stats(A).copies, { GPU: 2 });
  ix.applyBatch(A, batch(removed([1n])));
  assert.equal(matched(ix, range(0, 4))[A], 4, 'one copy left');
  ix.applyBatch(A, batch(removed([1n])));
  assert.equal(matched(ix, range(0, 4))[A], 0, 'the last copy is gone');
  assert.equal(ix.stats(A).unknownRemoval, 0);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4)));
  // e.g. another cache salt: same tokens, other engine hash
  ix.applyBatch(A, batch(stored([2n], null, range(0, 4), 4)));
  assert.deepEqual([ix.stats(A).blocks, ix.stats(A).nodes, ix.totalNodes()], [2, 1, 1]);
  ix.applyBatch(A, batch(removed([1n])));
  assert.equal(matched(ix, range(0, 4))[A], 4, 'still held through the other hash');
  ix.applyBatch(A, batch(removed([2n])));
  assert.equal(matched(ix, range(0, 4))[A], 0);
  assert.equal(ix.totalNodes(), 0);
  // the same engine hash re-stored with other tokens: the newest wins
  ix.applyBatch(A, batch(stored([3n], null, range(0, 4), 4), stored([3n], null, range(50, 54), 4)));
  assert.deepEqual(matched(ix, range(0, 4)), { [A]: 0 });
  assert.deepEqual(matched(ix, range(50, 54)), { [A]: 4 });
  assert.equal(ix.totalNodes(), 1);
});

test('clearSource and removeSource free everything; sources() lists the live ones', () => {
  const ix = new PrefixIndex();
  for (const s of [A, B]) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n, 2n], null, range(0, 8), 4)));
  ix.applyBatch(B, batch(stored([1n, 3n], null, [...range(0, 4), ...range(40, 44)], 4)));
  assert.deepEqual(ix.sources(), [A, B]);
  assert.equal(ix.totalNodes(), 3);
  ix.clearSource(A);
  assert.deepEqual(ix.sources(), [A, B]);
  assert.equal(ix.totalNodes(), 2);
  assert.deepEqual(matched(ix, range(0, 8)), { [A]: 0, [B]: 4 });
  ix.removeSource(B);
  assert.deepEqual(ix.sources(), [A]);
  assert.equal(ix.totalNodes(), 0);
  assert.deepEqual(matched(ix, range(0, 8)), { [A]: 0 });
  assert.equal(ix.dump(B), null);
  // a new source reuses the slot with clean bits
  ix.addSource('w9:0');
  ix.applyBatch('w9:0', batch(stored([5n], null, range(0, 4), 4)));
  assert.deepEqual(matched(ix, range(0, 8)), { [A]: 0, 'w9:0': 4 });
});

test('more than 32 sources (several membership words), added while nodes exist', () => {
  const ix = new PrefixIndex();
  for (let s = 0; s < 70; s++) {
    ix.addSource(`w${s}:0`);
    ix.applyBatch(`w${s}:0`, batch(stored([1n, BigInt(s + 2)], null, [...range(0, 4), ...range(100 * s, 100 * s + 4)], 4)));
  }
  assert.equal(ix.totalNodes(), 71);
  const m = ix.match([...range(0, 4), ...range(100 * 45, 100 * 45 + 4)]);
  for (let s = 0; s < 70; s++) assert.equal(m.get(`w${s}:0`)?.matchedTokens, s === 45 ? 8 : 4);
  ix.removeSource('w45:0');
  assert.equal(ix.totalNodes(), 70);
  for (let s = 0; s < 70; s++) if (s !== 45) ix.removeSource(`w${s}:0`);
  assert.equal(ix.totalNodes(), 0);
});

test('dump gives the source tree as JSON', () => {
  const ix = new PrefixIndex();
  for (const s of [A]) ix.addSource(s);
  ix.applyBatch(A, batch(
    stored([1n, 2n], null, range(0, 8), 4),
    stored([3n], 1n, range(20, 24), 4, { medium: 'CPU' }),
    stored([4n], null, range(50, 54), 4),
  ));
  ix.markProvisional(A, [...range(0, 8), ...range(60, 64)], 4);
  const d = ix.dump(A)!;
  assert.equal(d.blocks, 4);
  assert.equal(d.provisionalBlocks, 1);
  assert.equal(d.roots.length, 2);
  const root = d.roots.find((r) => r.children.length === 2)!;
  assert.deepEqual(root.hashes, ['1'], 'decimal strings, as the engines and GET /cache');
  assert.deepEqual(root.children.map((c) => c.media[0] ?? 'provisional').sort(), ['CPU', 'GPU']);
  const deep = root.children.find((c) => c.media[0] === 'GPU')!;
  assert.equal(deep.children.length, 1);
  assert.equal(deep.children[0].provisional, true);
  assert.doesNotThrow(() => JSON.stringify(d));
  assert.equal(ix.dump('nope'), null);
});

test('match accepts typed arrays and returns every source, zero when nothing matches', () => {
  const ix = new PrefixIndex();
  for (const s of [A, B, 'fresh']) ix.addSource(s);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4)));
  ix.applyBatch(B, batch(stored([1n], null, range(10, 14), 4)));
  ix.markProvisional('fresh', [], 4);
  const m = ix.match(Int32Array.from(range(0, 4)));
  assert.deepEqual([...m.keys()], [A, B, 'fresh']);
  assert.deepEqual(m.get(B), { matchedTokens: 0, byMedium: {} });
  assert.equal(m.get(A)?.matchedTokens, 4);
});

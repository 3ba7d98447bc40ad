import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import type { BlockStored } from '../../src/events/types.js';
import { batch, range, removed, stored } from './helpers.js';

const A = 'w0:0';
const B = 'w1:0';

function indexWith(...sources: string[]): PrefixIndex {
  const ix = new PrefixIndex();
  for (const s of sources) ix.addSource(s);
  return ix;
}

function salted(ev: BlockStored, extra: BlockStored['extra_keys']): BlockStored {
  return { ...ev, extra_keys: extra };
}

test('copies: a block leaves the tree with its last copy, per medium; parent links hold while any copy does', () => {
  const ix = indexWith(A);
  // two requests computed the same two blocks concurrently: vLLM stores both copies
  ix.applyBatch(A, batch(stored([1n, 2n], null, range(0, 8), 4), stored([1n, 2n], null, range(0, 8), 4)));
  assert.deepEqual(ix.stats(A).copies, { GPU: 4 });
  assert.equal(ix.heldBlocks(A), 4);
  ix.applyBatch(A, batch(removed([2n])));
  assert.equal(ix.match(range(0, 8)).get(A)?.matchedTokens, 8, 'one copy of block 2 is still there');
  ix.applyBatch(A, batch(removed([1n])));
  // a child stored under the parent's remaining copy still attaches
  ix.applyBatch(A, batch(stored([3n], 2n, range(8, 12), 4)));
  assert.equal(ix.match(range(0, 12)).get(A)?.matchedTokens, 12);
  assert.equal(ix.stats(A).unknownParent, 0);
  // copies are per medium: a CPU copy is removed by a CPU removal only
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4, { medium: 'CPU' })));
  ix.applyBatch(A, batch(removed([1n])));
  assert.deepEqual(ix.match(range(0, 4)).get(A)?.byMedium, { CPU: 4 });
  assert.equal(ix.heldBlocks(A, 'CPU'), 1);
  assert.equal(ix.heldBlocks(A, null), 3, 'GPU: one copy of 2, block 3; CPU: block 1');
  ix.applyBatch(A, batch(removed([1n], 'CPU')));
  assert.equal(ix.match(range(0, 4)).get(A)?.matchedTokens, 0);
  // one more removal than copies is an unknown removal
  ix.applyBatch(A, batch(removed([2n]), removed([2n])));
  assert.equal(ix.stats(A).unknownRemoval, 1);
});

test('copies: AllBlocksCleared, clearSource and removeSource drop every copy', () => {
  const ix = indexWith(A, B);
  const twice = batch(stored([1n, 2n], null, range(0, 8), 4), stored([1n, 2n], null, range(0, 8), 4));
  ix.applyBatch(A, twice);
  ix.applyBatch(A, batch({ type: 'AllBlocksCleared' }));
  assert.deepEqual(ix.stats(A).copies, {});
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4)));
  ix.applyBatch(A, batch(removed([1n])));
  assert.equal(ix.match(range(0, 4)).get(A)?.matchedTokens, 0, 'no stale copy survived the clear');
  ix.applyBatch(B, twice);
  ix.clearSource(B);
  ix.applyBatch(B, batch(stored([1n], null, range(0, 4), 4), removed([1n])));
  assert.equal(ix.match(range(0, 4)).get(B)?.matchedTokens, 0);
  ix.applyBatch(B, twice);
  ix.removeSource(B);
  assert.equal(ix.totalNodes(), 0);
  assert.equal(ix.heldBlocks(B), 0);
});

test('copies: the same engine hash re-stored with other tokens drops all copies of the old block', () => {
  const ix = indexWith(A);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4), stored([1n], null, range(0, 4), 4)));
  ix.applyBatch(A, batch(stored([1n], null, range(50, 54), 4)));
  assert.deepEqual(ix.stats(A).copies, { GPU: 1 });
  assert.equal(ix.match(range(0, 4)).get(A)?.matchedTokens, 0);
  ix.applyBatch(A, batch(removed([1n])));
  assert.equal(ix.totalNodes(), 0);
});

test('cache_salt from vLLM extra_keys (raw tuples and typed keys) and SGLang cache_salt keys the chain', () => {
  const ix = indexWith(A, B, 'c:0', 'd:0');
  const toks = range(0, 12);
  // vLLM raw: salt in the first block's tuple only, after the LoRA name
  ix.applyBatch(A, batch(salted(stored([1n, 2n], null, range(0, 8), 4, { lora_name: 'sql' }), [['sql', 'tenant-a'], ['sql']])));
  ix.applyBatch(A, batch(stored([3n], 2n, range(8, 12), 4, { lora_name: 'sql' })));
  // vLLM typed keys
  ix.applyBatch(B, batch(salted(stored([1n, 2n, 3n], null, toks, 4), [[{ type: 'cache_salt', salt: 'tenant-a' }], null, null])));
  // SGLang
  ix.applyBatch('c:0', batch({ ...stored([1n, 2n, 3n], null, toks, 4), cache_salt: 'tenant-a' }));
  ix.applyBatch('d:0', batch(stored([1n, 2n, 3n], null, toks, 4)));

  const got = (opts: Parameters<PrefixIndex['match']>[1]) => Object.fromEntries([...ix.match(toks, opts)].map(([s, m]) => [s, m.matchedTokens]));
  assert.deepEqual(got({}), { [A]: 0, [B]: 0, 'c:0': 0, 'd:0': 12 }, 'an unsalted prompt never hits a salted chain');
  assert.deepEqual(got({ salt: 'tenant-a' }), { [A]: 0, [B]: 12, 'c:0': 12, 'd:0': 0 });
  assert.deepEqual(got({ salt: 'tenant-b' }), { [A]: 0, [B]: 0, 'c:0': 0, 'd:0': 0 }, 'another salt never hits');
  assert.deepEqual(got({ salt: 'tenant-a', lora: 'sql' }), { [A]: 12, [B]: 0, 'c:0': 0, 'd:0': 0 });
  assert.deepEqual(got({ lora: 'sql' }), { [A]: 0, [B]: 0, 'c:0': 0, 'd:0': 0 }, 'a LoRA name alone is not a salt');
});

test('provisional marks carry the salt', () => {
  const ix = indexWith(A);
  ix.markProvisional(A, range(0, 8), 4, null, 'tenant-a');
  assert.equal(ix.match(range(0, 8), { salt: 'tenant-a' }).get(A)?.matchedTokens, 8);
  assert.equal(ix.match(range(0, 8)).get(A)?.matchedTokens, 0);
  assert.equal(ix.match(range(0, 8), { salt: 'tenant-b' }).get(A)?.matchedTokens, 0);
});

test('extra keys a prompt cannot reproduce (images, prompt embeds) keep the block but never match it', () => {
  const ix = indexWith(A);
  ix.applyBatch(A, batch(salted(stored([1n, 2n, 3n], null, range(0, 12), 4), [null, [['img-hash', 2]], null])));
  assert.equal(ix.stats(A).blocks, 3);
  assert.equal(ix.match(range(0, 12)).get(A)?.matchedTokens, 4, 'the match stops before the image block');
  // an extra_keys list that does not have one entry per block is malformed
  ix.applyBatch(A, batch(salted(stored([9n], null, range(40, 44), 4), [null, null])));
  assert.equal(ix.stats(A).invalid, 1);
});

test('maxTokens caps the match (vLLM always computes the last prompt token)', () => {
  const ix = indexWith(A);
  ix.applyBatch(A, batch(stored([1n, 2n, 3n, 4n], null, range(0, 16), 4)));
  const prompt = range(0, 16);
  assert.equal(ix.match(prompt).get(A)?.matchedTokens, 16);
  assert.equal(ix.match(prompt, { maxTokens: prompt.length - 1 }).get(A)?.matchedTokens, 12);
  assert.equal(ix.match(range(0, 17), { maxTokens: 16 }).get(A)?.matchedTokens, 16);
  assert.equal(ix.match(prompt, { maxTokens: 0 }).get(A)?.matchedTokens, 0);
});

test('sources exist only once added: events and marks for an unknown or removed source are ignored and counted', () => {
  const ix = new PrefixIndex();
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4)));
  ix.markProvisional(A, range(0, 8), 4);
  assert.deepEqual(ix.sources(), []);
  assert.equal(ix.totalNodes(), 0);
  assert.deepEqual(ix.unknownSourceCounts(), { batches: 1, provisionalMarks: 1 });
  ix.addSource(A);
  ix.addSource(A);
  ix.applyBatch(A, batch(stored([1n], null, range(0, 4), 4)));
  assert.deepEqual(ix.sources(), [A]);
  assert.equal(ix.hasSource(A), true);
  // removed while a request was being tokenized: its late mark must not bring it back
  ix.removeSource(A);
  ix.markProvisional(A, range(0, 8), 4);
  assert.deepEqual(ix.sources(), []);
  assert.equal(ix.totalNodes(), 0);
  assert.deepEqual(ix.unknownSourceCounts(), { batches: 1, provisionalMarks: 2 });
});

test('the store gives memory back when most blocks leave', () => {
  const ix = indexWith(A);
  const empty = ix.storeBytes();
  const n = 20_000;
  const hashes = Array.from({ length: n }, (_, i) => BigInt(i + 1));
  ix.applyBatch(A, batch(stored(hashes, null, range(0, n * 4), 4)));
  const full = ix.storeBytes();
  assert.ok(full > 16 * empty, `full ${full}`);
  // bytes per held node stay within the stated bound (192 at worst)
  assert.ok(full / n <= 192, `${full / n} bytes per node`);
  ix.applyBatch(A, batch(removed(hashes.slice(1000))));
  assert.ok(ix.storeBytes() * 8 < full, `after removals ${ix.storeBytes()}`);
  assert.equal(ix.match(range(0, 1000 * 4)).get(A)?.matchedTokens, 4000, 'the kept chain still matches');
  ix.applyBatch(A, batch(removed(hashes.slice(0, 1000))));
  assert.equal(ix.storeBytes(), empty);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrefixIndex } from '../../src/index/index.js';
import type { BlockHash, BlockRemoved, BlockStored, KVEvent } from '../../src/events/types.js';
import { batch, prng, randInt, range, stored } from './helpers.js';

/** A BlockStored as vLLM's hybrid KV cache manager publishes it: one per KV cache group, tagged. */
function groupStored(
  group: number,
  spec: { kind: string; window: number | null },
  hashes: BlockHash[],
  parent: BlockHash | null,
  tokens: number[],
  blockSize: number,
): BlockStored {
  return {
    ...stored(hashes, parent, tokens, blockSize, { medium: 'GPU' }),
    extra_keys: null,
    group_idx: group,
    kv_cache_spec_kind: spec.kind,
    kv_cache_spec_sliding_window: spec.window,
  };
}

function groupRemoved(group: number, hashes: BlockHash[]): BlockRemoved {
  return { type: 'BlockRemoved', block_hashes: hashes, medium: 'GPU', group_idx: group };
}

const FULL = { kind: 'full_attention', window: null };
const sliding = (w: number) => ({ kind: 'sliding_window', window: w });
const hashesOf = (n: number, base: bigint) => range(0, n).map((i) => base + BigInt(i));

test('a hybrid source matches what its full-attention group and its sliding window both allow', () => {
  const idx = new PrefixIndex();
  idx.addSource('w');
  const bs = 4;
  const tokens = range(100, 100 + 10 * bs); // 10 blocks
  const h = hashesOf(10, 1000n);
  // vLLM publishes the same block hashes for every group of one block size.
  idx.applyBatch('w', batch(groupStored(0, FULL, h, null, tokens, bs), groupStored(1, sliding(9), h, null, tokens, bs)));
  assert.equal(idx.stats('w').invalid, 0);
  assert.equal(idx.match(tokens).get('w')?.matchedTokens, 40);
  // The sliding-window group drops blocks that left its window: 0..5 gone, window of 9 tokens needs 2 blocks.
  idx.applyBatch('w', batch(groupRemoved(1, h.slice(0, 6))));
  assert.equal(idx.match(tokens).get('w')?.matchedTokens, 40, 'the window only needs the last blocks');
  assert.equal(idx.match(tokens, { maxTokens: 7 * bs }).get('w')?.matchedTokens, 0, 'block 6 alone is not a full window (needs 2)');
  assert.equal(idx.match(tokens, { maxTokens: 8 * bs }).get('w')?.matchedTokens, 32);
  // A full-attention removal shortens the hit; the sliding window then needs blocks before it.
  idx.applyBatch('w', batch(groupRemoved(0, [h[8]])));
  assert.equal(idx.match(tokens).get('w')?.matchedTokens, 32);
  idx.applyBatch('w', batch(groupRemoved(0, [h[7]])));
  assert.equal(idx.match(tokens).get('w')?.matchedTokens, 0, 'full stops at 7 blocks, sliding holds only block 6 before it');
  assert.equal(idx.stats('w').unknownRemoval, 0);
  idx.applyBatch('w', batch({ type: 'AllBlocksCleared' }));
  assert.equal(idx.match(tokens).get('w')?.matchedTokens, 0);
  assert.equal(idx.stats('w').blocks, 0);
});

test('groups with different block sizes: the hit is a multiple of both', () => {
  const idx = new PrefixIndex();
  idx.addSource('w');
  const tokens = range(7, 7 + 48);
  idx.applyBatch(
    'w',
    batch(
      groupStored(0, FULL, hashesOf(3, 1n), null, tokens.slice(0, 48), 16), // 48 tokens
      groupStored(1, sliding(64), hashesOf(4, 100n), null, tokens.slice(0, 32), 8), // 32 tokens, window needs 8 blocks
    ),
  );
  // Sliding group holds blocks 0..3 (leading run, no full window anywhere): 32 tokens, a multiple of lcm 16.
  assert.equal(idx.match(tokens).get('w')?.matchedTokens, 32);
  assert.equal(idx.stats('w').invalid, 0);
});

test('a removal for a group the source never stored is counted, not applied elsewhere', () => {
  const idx = new PrefixIndex();
  idx.addSource('w');
  const tokens = range(0, 8);
  idx.applyBatch('w', batch(groupStored(0, FULL, [5n, 6n], null, tokens, 4)));
  idx.applyBatch('w', batch(groupRemoved(3, [5n])));
  assert.equal(idx.stats('w').unknownRemoval, 1);
  assert.equal(idx.match(tokens).get('w')?.matchedTokens, 8);
});

/** Reference: the largest L (multiple of every block size) each group allows, by brute force. */
function referenceHit(groups: { bs: number; need: number; held: Set<number> }[], max: number, lcm: number): number {
  for (let L = Math.floor(max / lcm) * lcm; L > 0; L -= lcm) {
    const ok = groups.every((g) => {
      const end = L / g.bs;
      const from = g.need === Infinity ? 0 : Math.max(0, end - g.need);
      for (let i = from; i < end; i++) if (!g.held.has(i)) return false;
      return true;
    });
    if (ok) return L;
  }
  return 0;
}

test('reference model: random hybrid states from vLLM-shaped batches', () => {
  const rnd = prng(17);
  for (let trial = 0; trial < 200; trial++) {
    const idx = new PrefixIndex();
    idx.addSource('w');
    const bs = 4;
    const nb = 1 + randInt(rnd, 16);
    const tokens = range(trial * 1000, trial * 1000 + nb * bs);
    const h = hashesOf(nb, BigInt(trial) * 100n);
    // Windows from 2 tokens: a 1-token window needs no block, a degenerate case vLLM handles by its own loop.
    const specs = [FULL, sliding(2 + randInt(rnd, 20)), ...(rnd() < 0.5 ? [sliding(2 + randInt(rnd, 20))] : [])];
    const events: KVEvent[] = specs.map((sp, g) => groupStored(g, sp, h, null, tokens, bs));
    const model = specs.map((sp) => ({
      bs,
      need: sp.window === null ? Infinity : Math.ceil((sp.window - 1) / bs),
      held: new Set(range(0, nb)),
    }));
    specs.forEach((_, g) => {
      const gone = range(0, nb).filter(() => rnd() < 0.3);
      for (const i of gone) model[g].held.delete(i);
      if (gone.length > 0) events.push(groupRemoved(g, gone.map((i) => h[i])));
    });
    idx.applyBatch('w', batch(...events));
    const max = randInt(rnd, nb * bs + 1);
    const got = idx.match(tokens, { maxTokens: max }).get('w')?.matchedTokens;
    assert.equal(got, referenceHit(model, max, bs), `trial ${trial}`);
  }
});

test('prompt keys: match and provisional marks through one keys object agree with the token-array calls', () => {
  const idx = new PrefixIndex();
  idx.addSource('a');
  idx.addSource('b');
  const tokens = range(1, 65);
  const keys = idx.promptKeys(tokens, 16, { lora: 'ad', salt: 's' });
  idx.markProvisional('a', keys);
  const viaKeys = idx.match(keys, { maxTokens: 63 });
  const viaTokens = idx.match(tokens, { lora: 'ad', salt: 's', maxTokens: 63 });
  assert.deepEqual([...viaKeys], [...viaTokens]);
  assert.equal(viaKeys.get('a')?.matchedTokens, 48);
  assert.equal(idx.match(tokens, { lora: 'ad', maxTokens: 63 }).get('a')?.matchedTokens, 0, 'salt kept apart');
  assert.equal(idx.match(tokens).get('a')?.matchedTokens, 0, 'lora kept apart');
  assert.throws(() => idx.promptKeys(tokens, 0), RangeError);
});

test('a provisional mark on a hybrid source marks every group and counts as the provisional tier', () => {
  let now = 0;
  const idx = new PrefixIndex({ provisionalTtlMs: 100, now: () => now });
  idx.addSource('w');
  const tokens = range(0, 32);
  // Two real blocks in each group, then a mark for the whole 8-block prompt.
  idx.applyBatch('w', batch(groupStored(0, FULL, [1n, 2n], null, tokens.slice(0, 8), 4), groupStored(1, sliding(8), [1n, 2n], null, tokens.slice(0, 8), 4)));
  idx.markProvisional('w', idx.promptKeys(tokens, 4));
  assert.deepEqual(idx.match(tokens).get('w'), { matchedTokens: 32, byMedium: { GPU: 8, provisional: 24 } });
  now += 101;
  assert.deepEqual(idx.match(tokens).get('w'), { matchedTokens: 8, byMedium: { GPU: 8 } });
});
